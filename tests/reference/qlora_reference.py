"""PyTorch reference for a QLoRA step: LoRA (model_reference.py's torchtune LoRALinear) over
a base whose decoder linears (q/k/v/output_proj, w1/w2/w3) are NF4-quantized and dequantized
with nf4_reference.py's to_nf4, as torchtune's linear_nf4 computes x @ dequantize(W)^T.

Run with Debian's torch: /usr/bin/python3 tests/reference/qlora_reference.py
Writes tests/fixtures/model_train_qlora.safetensors (read by tests/quant_qlora_test.ts): the
10-step model_train_* schedule (AdamW, 2 micro-batches, clipping, cosine warmup, dropout 0.1).
The base weights are not stored: they come from `hashed` (which the test remakes), listed
with their seeds in the metadata; one dequantized weight is stored to check the NF4 base.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import model_reference as mr  # noqa: E402
from fixture_io import write_fixture  # noqa: E402
from nf4_reference import hashed, to_nf4  # noqa: E402

LINEARS = ("q_proj", "k_proj", "v_proj", "output_proj", "w1", "w2", "w3")
WEIGHTS = {}  # name -> [seed, scale, offset]
DEQ = {}


def hashed_weights(cfg, _gen):
    """Base weights from `hashed` (seed 100 + index), decoder linears through NF4."""
    out = {}
    for k, (name, shape) in enumerate(mr.shapes(cfg).items()):
        if name.endswith(".scale"):
            spec = [100 + k, 0.1, 1.0]
        elif name.startswith("tok_embeddings"):
            spec = [100 + k, 1.0, 0.0]
        else:
            spec = [100 + k, 0.08, 0.0]
        WEIGHTS[name] = spec
        w = hashed(shape, spec[0], spec[1]) + spec[2]
        if any(name.endswith(f".{m}.weight") for m in LINEARS):
            w = to_nf4(w)[4]
            DEQ[name] = w
        out[name] = w
    return out


def write_without_base(path, tensors, meta):
    kept = {k: v for k, v in tensors.items()
            if not k.startswith("w.") and not k.startswith("merged.")}
    kept["deq.layers.0.attn.q_proj.weight"] = DEQ["layers.0.attn.q_proj.weight"]
    meta = dict(meta, weights=WEIGHTS)
    write_fixture(path, kept, meta)


def config_q():
    """Sizes NF4 accepts (every linear a multiple of 16384 elements), interleaved rope."""
    return dict(vocab=61, dim=128, n_layers=2, n_heads=4, n_kv_heads=4, hidden=128,
                norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None,
                rope_layout="interleaved", tied=False, qkv_bias=False)


if __name__ == "__main__":
    torch.manual_seed(0)
    mr.random_weights = hashed_weights
    mr.write_fixture = write_without_base
    mr.train_fixture("model_train_qlora", config_q(), 9,
                     lora={"rank": 4, "alpha": 8.0, "dropout": 0.1, "seed": 42,
                           "attn": ["q_proj", "k_proj", "v_proj", "output_proj"], "mlp": True,
                           "output": True})
