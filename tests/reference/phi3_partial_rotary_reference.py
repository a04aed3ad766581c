"""Partial rotary fixtures (Phi-4-mini's partial_rotary_factor) for tests/model_partial_rotary_test.ts.

Run with Debian's torch: /usr/bin/python3 tests/reference/phi3_partial_rotary_reference.py

A tiny Phi3ForCausalLM (dim 32, 2 layers, 4 heads of 8, 2 kv heads, vocab 40, intermediate
24) with partial_rotary_factor 0.75: rope on the first int(8 * 0.75) = 6 dims of each head,
dims 6-7 passed through, as transformers' modeling_phi3 does it:
  rotary_ndims = int(head_dim * partial_rotary_factor)
  inv_freq = 1 / theta^(arange(0, rotary_ndims, 2) / rotary_ndims)
  q_rot, q_pass = q[..., :rotary_ndims], q[..., rotary_ndims:]
  q = cat(q_rot * cos + rotate_half(q_rot) * sin, q_pass)     (same for k)
Writes:
  tests/fixtures/checkpoint_hf_phi3_partial/{config.json,model.safetensors}  (fused qkv_proj
      and gate_up_proj, Hugging Face names)
  tests/fixtures/phi3_partial_rotary.safetensors  tokens (1, 12) and logits (1, 12, V) of one
      sequence; train_tokens / train_targets (2, 6) with two ignored targets (-100), the mean
      cross-entropy `loss` and grad.<torchtune name> of every weight (q/k/v and w1/w3 split
      as torchtune's phi3_hf_to_tune, rows in Hugging Face's rotate-half order).
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from fixture_io import write_fixture  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")

DIM, LAYERS, HEADS, KV, VOCAB, HIDDEN = 32, 2, 4, 2, 40, 24
HS = DIM // HEADS
PARTIAL = 0.75
RD = int(HS * PARTIAL)
EPS, THETA = 1e-5, 10000.0


def tune_state_dict(gen):
    """Random weights by torchtune name (q, k, v and gate, up separate)."""
    sd = {"tok_embeddings.weight": 0.5 * torch.randn(VOCAB, DIM, generator=gen)}
    for i in range(LAYERS):
        t = f"layers.{i}."
        sd[t + "attn.q_proj.weight"] = torch.randn(HEADS * HS, DIM, generator=gen) / math.sqrt(DIM)
        sd[t + "attn.k_proj.weight"] = torch.randn(KV * HS, DIM, generator=gen) / math.sqrt(DIM)
        sd[t + "attn.v_proj.weight"] = torch.randn(KV * HS, DIM, generator=gen) / math.sqrt(DIM)
        sd[t + "attn.output_proj.weight"] = torch.randn(DIM, HEADS * HS, generator=gen) / 4
        sd[t + "mlp.w1.weight"] = torch.randn(HIDDEN, DIM, generator=gen) / 4
        sd[t + "mlp.w3.weight"] = torch.randn(HIDDEN, DIM, generator=gen) / 4
        sd[t + "mlp.w2.weight"] = torch.randn(DIM, HIDDEN, generator=gen) / math.sqrt(HIDDEN)
        sd[t + "sa_norm.scale"] = 1.0 + 0.1 * torch.randn(DIM, generator=gen)
        sd[t + "mlp_norm.scale"] = 1.0 + 0.1 * torch.randn(DIM, generator=gen)
    sd["norm.scale"] = 1.0 + 0.1 * torch.randn(DIM, generator=gen)
    sd["output.weight"] = torch.randn(VOCAB, DIM, generator=gen) / 4
    return sd


def to_hf(sd):
    """torchtune's phi3_tune_to_hf: q, k, v stacked into qkv_proj, gate then up into gate_up_proj."""
    out = {"model.embed_tokens.weight": sd["tok_embeddings.weight"],
           "model.norm.weight": sd["norm.scale"], "lm_head.weight": sd["output.weight"]}
    for i in range(LAYERS):
        p, t = f"model.layers.{i}.", f"layers.{i}."
        out[p + "self_attn.qkv_proj.weight"] = torch.cat(
            [sd[t + "attn.q_proj.weight"], sd[t + "attn.k_proj.weight"], sd[t + "attn.v_proj.weight"]])
        out[p + "self_attn.o_proj.weight"] = sd[t + "attn.output_proj.weight"]
        out[p + "mlp.gate_up_proj.weight"] = torch.cat([sd[t + "mlp.w1.weight"], sd[t + "mlp.w3.weight"]])
        out[p + "mlp.down_proj.weight"] = sd[t + "mlp.w2.weight"]
        out[p + "input_layernorm.weight"] = sd[t + "sa_norm.scale"]
        out[p + "post_attention_layernorm.weight"] = sd[t + "mlp_norm.scale"]
    return out


def rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def partial_rope(x, cos, sin):
    rot, keep = x[..., :RD], x[..., RD:]
    return torch.cat((rot * cos + rotate_half(rot) * sin, keep), dim=-1)


def phi3_forward(hf, tokens):
    """transformers' Phi3ForCausalLM.forward (eager attention, partial rotary) on fused weights; tokens (B, T)."""
    B, T = tokens.shape
    inv_freq = 1.0 / (THETA ** (torch.arange(0, RD, 2).float() / RD))
    freqs = torch.outer(torch.arange(T).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]  # (1, T, 1, RD)
    x = hf["model.embed_tokens.weight"][tokens]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        h = rms(x, hf[p + "input_layernorm.weight"])
        qkv = h @ hf[p + "self_attn.qkv_proj.weight"].t()
        qp = HEADS * HS
        q = qkv[..., :qp].reshape(B, T, HEADS, HS)
        k = qkv[..., qp:qp + KV * HS].reshape(B, T, KV, HS)
        v = qkv[..., qp + KV * HS:].reshape(B, T, KV, HS)
        q, k = partial_rope(q, cos, sin), partial_rope(k, cos, sin)
        rep = HEADS // KV
        k = k.repeat_interleave(rep, dim=2)
        v = v.repeat_interleave(rep, dim=2)
        s = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(HS)
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        att = torch.einsum("bhts,bshd->bthd", torch.softmax(s, -1), v).reshape(B, T, qp)
        x = x + att @ hf[p + "self_attn.o_proj.weight"].t()
        h = rms(x, hf[p + "post_attention_layernorm.weight"])
        gate, up = (h @ hf[p + "mlp.gate_up_proj.weight"].t()).chunk(2, dim=-1)
        x = x + (up * torch.nn.functional.silu(gate)) @ hf[p + "mlp.down_proj.weight"].t()
    x = rms(x, hf["model.norm.weight"])
    return x @ hf["lm_head.weight"].t()  # (B, T, V)


def main():
    gen = torch.Generator().manual_seed(11)
    sd = tune_state_dict(gen)
    d = os.path.join(FIX, "checkpoint_hf_phi3_partial")
    os.makedirs(d, exist_ok=True)
    write_fixture(os.path.join(d, "model.safetensors"), to_hf(sd))
    config = {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "vocab_size": VOCAB,
        "hidden_size": DIM, "intermediate_size": HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV, "rms_norm_eps": EPS,
        "rope_theta": THETA, "rope_scaling": None, "partial_rotary_factor": PARTIAL,
        "max_position_embeddings": 64, "original_max_position_embeddings": 64,
        "sliding_window": None, "tie_word_embeddings": False, "hidden_act": "silu",
        "bos_token_id": 1, "eos_token_id": 32000, "pad_token_id": 32000,
        "torch_dtype": "float32",
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    tokens = torch.tensor([[(i * 7 + 3) % VOCAB for i in range(12)]])
    with torch.no_grad():
        logits = phi3_forward(to_hf(sd), tokens)
        # control: full rotary gives other logits, so the test can tell them apart
    train_tokens = torch.tensor([[(i * 5 + 1) % VOCAB for i in range(6)],
                                 [(i * 11 + 2) % VOCAB for i in range(6)]])
    train_targets = torch.tensor([[(i * 5 + 6) % VOCAB for i in range(6)],
                                  [(i * 11 + 13) % VOCAB for i in range(6)]])
    train_targets[0, 0] = -100
    train_targets[1, 3] = -100
    params = {k: v.clone().requires_grad_(True) for k, v in sd.items()}
    out = phi3_forward(to_hf(params), train_tokens)
    loss = torch.nn.functional.cross_entropy(out.reshape(-1, VOCAB), train_targets.reshape(-1),
                                             ignore_index=-100)
    loss.backward()
    fx = {"tokens": tokens, "logits": logits, "train_tokens": train_tokens,
          "train_targets": train_targets, "loss": loss.detach().reshape(1)}
    for k, v in params.items():
        fx["grad." + k] = v.grad
    write_fixture(os.path.join(FIX, "phi3_partial_rotary.safetensors"), fx)
    print(f"rotary dims {RD} of {HS}; loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
