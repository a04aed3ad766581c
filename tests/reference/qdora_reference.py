"""PyTorch reference for QDoRA: torchtune's DoRALinear (dora_reference.py) over a base whose
decoder linears are NF4-quantized and dequantized (qlora_reference.py's base, nf4_reference's
to_nf4): the row norms ||W + s B A|| and the base product both use the dequantized W.

Run with Debian's torch: /usr/bin/python3 tests/reference/qdora_reference.py
Writes tests/fixtures/model_train_qdora.safetensors (read by tests/quant_qdora_test.ts): the
10-step DoRA schedule of dora_reference.py on qlora_reference.py's tiny NF4-friendly Llama.
The base weights are not stored (the test remakes them from `hashed`, seeds in the metadata).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import dora_reference as dr  # noqa: E402  (sets model_reference.linear to DoRALinear)
import model_reference as mr  # noqa: E402
import qlora_reference as qr  # noqa: E402

if __name__ == "__main__":
    torch.manual_seed(0)
    os.makedirs(mr.OUT, exist_ok=True)
    mr.random_weights = qr.hashed_weights
    dr.write_fixture = qr.write_without_base
    dr.train_dora_fixture("model_train_qdora", qr.config_q(), 9,
                          lora={"rank": 4, "alpha": 8.0, "dropout": 0.1, "seed": 42,
                                "attn": ["q_proj", "k_proj", "v_proj", "output_proj"],
                                "mlp": True, "output": True, "use_dora": True})
