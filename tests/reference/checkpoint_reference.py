"""Fixtures for tests/checkpoint_*_test.ts, made with PyTorch (Debian python3-torch 1.13).

Run: /usr/bin/python3 tests/reference/checkpoint_reference.py

Writes (all tiny):
  tests/fixtures/checkpoint_hf_bf16/{model.safetensors,config.json}  bf16 HF checkpoint whose
      bytes come from torch's fp32 -> bf16 conversion (safetensors layout written by hand,
      the safetensors package is not installed here)
  tests/fixtures/checkpoint_hf_bf16_expected.safetensors  the same tensors as fp32 (torch's bf16 -> fp32)
  tests/fixtures/checkpoint_meta/{consolidated.00.pth,params.json}  torch.save of a Meta state dict
  tests/fixtures/checkpoint_meta2/{consolidated.00.pth,consolidated.01.pth,params.json}
      the same model split over 2 model-parallel ranks the way Meta's layers split it
  tests/fixtures/checkpoint_hf_qwen2/{model.safetensors,config.json}  fp32 Qwen2 with q/k/v biases
  tests/fixtures/checkpoint_meta_expected.safetensors  the full Meta tensors (fp32) plus
      `hf.<name>` = Hugging Face's permute() of wq/wk (convert_llama_weights_to_hf.py)
"""
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from fixture_io import write_fixture  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "fixtures")
torch.manual_seed(0)

# Tiny Llama: dim 16, 2 layers, 4 heads, 2 kv heads (HS 4), vocab 32, hidden 48 (multiple_of 16).
DIM, LAYERS, HEADS, KV, VOCAB, HIDDEN = 16, 2, 4, 2, 32, 48
HS = DIM // HEADS


def meta_state_dict():
    sd = {"tok_embeddings.weight": torch.randn(VOCAB, DIM)}
    for i in range(LAYERS):
        p = f"layers.{i}."
        sd[p + "attention.wq.weight"] = torch.randn(HEADS * HS, DIM)
        sd[p + "attention.wk.weight"] = torch.randn(KV * HS, DIM)
        sd[p + "attention.wv.weight"] = torch.randn(KV * HS, DIM)
        sd[p + "attention.wo.weight"] = torch.randn(DIM, HEADS * HS)
        sd[p + "feed_forward.w1.weight"] = torch.randn(HIDDEN, DIM)
        sd[p + "feed_forward.w2.weight"] = torch.randn(DIM, HIDDEN)
        sd[p + "feed_forward.w3.weight"] = torch.randn(HIDDEN, DIM)
        sd[p + "attention_norm.weight"] = torch.rand(DIM) + 0.5
        sd[p + "ffn_norm.weight"] = torch.rand(DIM) + 0.5
    sd["norm.weight"] = torch.rand(DIM) + 0.5
    sd["output.weight"] = torch.randn(VOCAB, DIM)
    sd["rope.freqs"] = torch.randn(HS // 2)  # present in Meta's Llama 2 files; ignored
    return sd


def hf_permute(w, n_heads, dim1, dim2):
    # transformers/models/llama/convert_llama_weights_to_hf.py
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


PARAMS = {"dim": DIM, "n_layers": LAYERS, "n_heads": HEADS, "n_kv_heads": KV, "vocab_size": -1,
          "multiple_of": 16, "norm_eps": 1e-5, "rope_theta": 10000.0}


def write_meta():
    sd = meta_state_dict()
    d1 = os.path.join(ROOT, "checkpoint_meta")
    os.makedirs(d1, exist_ok=True)
    # bf16 weights for some tensors, as Meta ships bf16; the rest fp32.
    saved = {k: (v.to(torch.bfloat16) if "w3" in k else v) for k, v in sd.items()}
    torch.save(saved, os.path.join(d1, "consolidated.00.pth"))
    with open(os.path.join(d1, "params.json"), "w") as f:
        json.dump(PARAMS, f)
    # Two model-parallel shards: column-parallel along 0, row-parallel along 1,
    # embedding along 1 (Llama 2's ParallelEmbedding), norms replicated.
    d2 = os.path.join(ROOT, "checkpoint_meta2")
    os.makedirs(d2, exist_ok=True)
    shards = [{}, {}]
    for k, v in saved.items():
        if any(s in k for s in ("wq", "wk", "wv", "w1", "w3")) or k == "output.weight":
            parts = v.chunk(2, 0)
        elif any(s in k for s in ("wo", "w2")) or k == "tok_embeddings.weight":
            parts = v.chunk(2, 1)
        else:
            parts = [v, v]
        for r in range(2):
            shards[r][k] = parts[r].clone()
    for r in range(2):
        torch.save(shards[r], os.path.join(d2, f"consolidated.0{r}.pth"))
    with open(os.path.join(d2, "params.json"), "w") as f:
        json.dump(PARAMS, f)
    expected = {k: v.float() for k, v in saved.items()}
    for i in range(LAYERS):
        p = f"layers.{i}.attention."
        expected[f"hf.{p}wq.weight"] = hf_permute(expected[p + "wq.weight"], HEADS, DIM, DIM)
        expected[f"hf.{p}wk.weight"] = hf_permute(expected[p + "wk.weight"], KV, KV * HS, DIM)
    write_fixture(os.path.join(ROOT, "checkpoint_meta_expected.safetensors"), expected)


def write_bf16_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    head = json.dumps(header).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in blobs:
            f.write(raw)


def write_hf_bf16():
    torch.manual_seed(1)
    d = os.path.join(ROOT, "checkpoint_hf_bf16")
    os.makedirs(d, exist_ok=True)
    sd = {"model.embed_tokens.weight": torch.randn(VOCAB, DIM)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = torch.rand(DIM) + 0.5
        sd[p + "self_attn.q_proj.weight"] = torch.randn(HEADS * HS, DIM) * 0.1
        sd[p + "self_attn.k_proj.weight"] = torch.randn(KV * HS, DIM) * 0.1
        sd[p + "self_attn.v_proj.weight"] = torch.randn(KV * HS, DIM) * 0.1
        sd[p + "self_attn.o_proj.weight"] = torch.randn(DIM, HEADS * HS) * 0.1
        sd[p + "post_attention_layernorm.weight"] = torch.rand(DIM) + 0.5
        sd[p + "mlp.gate_proj.weight"] = torch.randn(HIDDEN, DIM) * 0.1
        sd[p + "mlp.up_proj.weight"] = torch.randn(HIDDEN, DIM) * 0.1
        sd[p + "mlp.down_proj.weight"] = torch.randn(DIM, HIDDEN) * 0.1
    sd["model.norm.weight"] = torch.rand(DIM) + 0.5
    bf = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    write_bf16_safetensors(os.path.join(d, "model.safetensors"), bf)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB,
        "hidden_size": DIM, "intermediate_size": HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "max_position_embeddings": 128, "tie_word_embeddings": True,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "torch_dtype": "bfloat16", "bos_token_id": 1,
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_fixture(os.path.join(ROOT, "checkpoint_hf_bf16_expected.safetensors"),
                  {k: v.float() for k, v in bf.items()})


def write_qwen2():
    """Tiny Qwen2ForCausalLM checkpoint (fp32, q/k/v biases, tied embeddings)."""
    torch.manual_seed(2)
    d = os.path.join(ROOT, "checkpoint_hf_qwen2")
    os.makedirs(d, exist_ok=True)
    sd = {"model.embed_tokens.weight": torch.randn(VOCAB, DIM) * 0.5}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = torch.rand(DIM) + 0.5
        sd[p + "self_attn.q_proj.weight"] = torch.randn(HEADS * HS, DIM) * 0.3
        sd[p + "self_attn.q_proj.bias"] = torch.randn(HEADS * HS)
        sd[p + "self_attn.k_proj.weight"] = torch.randn(KV * HS, DIM) * 0.3
        sd[p + "self_attn.k_proj.bias"] = torch.randn(KV * HS)
        sd[p + "self_attn.v_proj.weight"] = torch.randn(KV * HS, DIM) * 0.3
        sd[p + "self_attn.v_proj.bias"] = torch.randn(KV * HS)
        sd[p + "self_attn.o_proj.weight"] = torch.randn(DIM, HEADS * HS) * 0.3
        sd[p + "post_attention_layernorm.weight"] = torch.rand(DIM) + 0.5
        sd[p + "mlp.gate_proj.weight"] = torch.randn(HIDDEN, DIM) * 0.3
        sd[p + "mlp.up_proj.weight"] = torch.randn(HIDDEN, DIM) * 0.3
        sd[p + "mlp.down_proj.weight"] = torch.randn(DIM, HIDDEN) * 0.3
    sd["model.norm.weight"] = torch.rand(DIM) + 0.5
    write_fixture(os.path.join(d, "model.safetensors"), sd)
    config = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": VOCAB,
        "hidden_size": DIM, "intermediate_size": HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "max_position_embeddings": 64, "tie_word_embeddings": True,
        "sliding_window": 64, "use_sliding_window": False, "torch_dtype": "float32",
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


if __name__ == "__main__":
    write_meta()
    write_hf_bf16()
    write_qwen2()
    print("wrote checkpoint fixtures")
