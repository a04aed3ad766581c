"""Qwen3 fixtures for tests/checkpoint_qwen3_test.ts.

Run with Debian's torch: /usr/bin/python3 tests/reference/qwen3_reference.py

Writes:
  tests/fixtures/checkpoint_hf_qwen3/{config.json,model.safetensors}  a tiny Qwen3ForCausalLM
      checkpoint laid out as Hugging Face's (rotate-half q/k rows, q_norm/k_norm weights of
      head_dim, an untied lm_head). Every Qwen3 feature is on: head_dim 8 with hidden_size 24
      and 4 heads (4 * 8 = 32 != 24, as Qwen3-0.6B's 16 * 128 != 1024), grouped key/value
      heads (2), per-head RMSNorm on q and k (weights far from 1, so they matter), no q/k/v
      bias, rope_theta 1e6.
  tests/fixtures/checkpoint_hf_qwen3_expected.safetensors
      tokens (T) and logits (1, T, V) of qwen3_forward() below; train_tokens / train_targets
      (B, T, -100 = ignored), loss (the mean cross-entropy over counted targets) and
      grad.<hf name> for every tensor of the file after loss.backward() (full fine-tune);
      lora_A.<hf weight name> (r, in) / lora_B.<hf weight name> (out, r) adapters on q, k, v,
      o, gate, up, down and lm_head (rank 2, alpha 4, B random so every gradient is nonzero),
      lora_loss and grad.lora_A.* / grad.lora_B.* of the same batch with the base frozen.

qwen3_forward() is transformers' Qwen3ForCausalLM forward (modeling_qwen3, eager attention)
written out in plain fp32 torch. Its difference from Qwen2/Llama is explicit:
  - q = q_norm(q_proj(x).view(B, T, heads, head_dim)), k likewise with k_norm (Qwen3RMSNorm
    over head_dim: x * rsqrt(mean(x^2) + eps) * weight), BEFORE the rotary embedding,
  - attention scaled by 1 / sqrt(head_dim), head_dim independent of hidden_size / heads,
  - no bias on q/k/v (attention_bias false).
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from fixture_io import write_fixture  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")

# Tiny Qwen3: dim 24, 2 layers, 4 heads of 8, 2 kv heads, vocab 48, intermediate 40.
DIM, LAYERS, HEADS, KV, HD, VOCAB, HIDDEN = 24, 2, 4, 2, 8, 48, 40
EPS, THETA, MAX_POS = 1e-6, 1000000.0, 64
RANK, ALPHA = 2, 4.0


def hf_state_dict(gen):
    sd = {"model.embed_tokens.weight": 0.5 * torch.randn(VOCAB, DIM, generator=gen)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = torch.randn(HEADS * HD, DIM, generator=gen) / math.sqrt(DIM)
        sd[p + "self_attn.k_proj.weight"] = torch.randn(KV * HD, DIM, generator=gen) / math.sqrt(DIM)
        sd[p + "self_attn.v_proj.weight"] = torch.randn(KV * HD, DIM, generator=gen) / math.sqrt(DIM)
        sd[p + "self_attn.o_proj.weight"] = torch.randn(DIM, HEADS * HD, generator=gen) / 6
        # per-head norms: weights spread around 1 (each of the HD entries differs)
        sd[p + "self_attn.q_norm.weight"] = 1 + 0.5 * torch.randn(HD, generator=gen)
        sd[p + "self_attn.k_norm.weight"] = 1 + 0.5 * torch.randn(HD, generator=gen)
        sd[p + "mlp.gate_proj.weight"] = torch.randn(HIDDEN, DIM, generator=gen) / math.sqrt(DIM)
        sd[p + "mlp.up_proj.weight"] = torch.randn(HIDDEN, DIM, generator=gen) / math.sqrt(DIM)
        sd[p + "mlp.down_proj.weight"] = torch.randn(DIM, HIDDEN, generator=gen) / math.sqrt(HIDDEN)
        sd[p + "input_layernorm.weight"] = 1 + 0.2 * torch.randn(DIM, generator=gen)
        sd[p + "post_attention_layernorm.weight"] = 1 + 0.2 * torch.randn(DIM, generator=gen)
    sd["model.norm.weight"] = 1 + 0.2 * torch.randn(DIM, generator=gen)
    sd["lm_head.weight"] = 0.5 * torch.randn(VOCAB, DIM, generator=gen)
    return sd


def rms(x, w):
    """Qwen3RMSNorm.forward (fp32 throughout here)."""
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def qwen3_forward(sd, tokens, lora=None):
    """transformers' Qwen3ForCausalLM.forward, eager attention; tokens (B, T) -> logits (B, T, V).

    With `lora` ({hf weight name: (A (r, in), B (out, r))}, scale ALPHA / RANK) each adapted
    linear adds scale * x @ A^T @ B^T (PEFT's lora.Linear, dropout 0)."""

    def lin(h, name):
        out = h @ sd[name].t()
        if lora and name in lora:
            a, b = lora[name]
            out = out + (ALPHA / RANK) * ((h @ a.t()) @ b.t())
        return out

    B, T = tokens.shape
    inv_freq = 1.0 / (THETA ** (torch.arange(0, HD, 2, dtype=torch.int64).float() / HD))
    freqs = torch.outer(torch.arange(T).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]  # (1, T, 1, HD)
    x = sd["model.embed_tokens.weight"][tokens]  # (B, T, C)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        h = rms(x, sd[p + "input_layernorm.weight"])
        q = lin(h, p + "self_attn.q_proj.weight").view(B, T, HEADS, HD)
        k = lin(h, p + "self_attn.k_proj.weight").view(B, T, KV, HD)
        v = lin(h, p + "self_attn.v_proj.weight").view(B, T, KV, HD)
        q = rms(q, sd[p + "self_attn.q_norm.weight"])  # per head, before rope
        k = rms(k, sd[p + "self_attn.k_norm.weight"])
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(HEADS // KV, dim=2)
        v = v.repeat_interleave(HEADS // KV, dim=2)
        s = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(HD)
        s = s.masked_fill(~mask, float("-inf"))
        att = torch.einsum("bhts,bshd->bthd", torch.softmax(s, -1), v).reshape(B, T, HEADS * HD)
        x = x + lin(att, p + "self_attn.o_proj.weight")
        h = rms(x, sd[p + "post_attention_layernorm.weight"])
        gate = lin(h, p + "mlp.gate_proj.weight")
        up = lin(h, p + "mlp.up_proj.weight")
        x = x + lin(F.silu(gate) * up, p + "mlp.down_proj.weight")
    x = rms(x, sd["model.norm.weight"])
    return lin(x, "lm_head.weight")


def write_checkpoint():
    gen = torch.Generator().manual_seed(23)
    sd = hf_state_dict(gen)
    d = os.path.join(FIX, "checkpoint_hf_qwen3")
    os.makedirs(d, exist_ok=True)
    write_fixture(os.path.join(d, "model.safetensors"), sd)
    # the keys of Qwen/Qwen3-0.6B's config.json
    config = {
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": 45, "eos_token_id": 46, "head_dim": HD,
        "hidden_act": "silu", "hidden_size": DIM, "initializer_range": 0.02,
        "intermediate_size": HIDDEN, "max_position_embeddings": MAX_POS, "max_window_layers": LAYERS,
        "model_type": "qwen3", "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV, "rms_norm_eps": EPS, "rope_scaling": None,
        "rope_theta": THETA, "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "float32", "use_cache": True, "use_sliding_window": False,
        "vocab_size": VOCAB,
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    tokens = torch.tensor([(i * 7 + 3) % VOCAB for i in range(10)])
    with torch.no_grad():
        logits = qwen3_forward(sd, tokens.view(1, -1))
    # one full fine-tuning step's loss and gradients
    B, T = 2, 6
    train_tokens = torch.randint(0, VOCAB, (B, T), generator=gen)
    train_targets = torch.randint(0, VOCAB, (B, T), generator=gen)
    train_targets[0, 0] = -100
    train_targets[1, 3] = -100
    params = {k: v.clone().requires_grad_(True) for k, v in sd.items()}
    lg = qwen3_forward(params, train_tokens)
    loss = F.cross_entropy(lg.reshape(-1, VOCAB), train_targets.reshape(-1), ignore_index=-100)
    loss.backward()
    out = {"tokens": tokens, "logits": logits, "train_tokens": train_tokens,
           "train_targets": train_targets, "loss": loss.detach().view(1)}
    for k, v in params.items():
        out["grad." + k] = v.grad
    # one LoRA step: adapters on q, k, v, o, gate, up, down and the output, base frozen
    lora = {}
    for name, w in sd.items():
        if name.endswith("proj.weight") or name == "lm_head.weight":
            a = torch.randn(RANK, w.shape[1], generator=gen) / math.sqrt(w.shape[1])
            b = 0.3 * torch.randn(w.shape[0], RANK, generator=gen)
            lora[name] = (a.requires_grad_(True), b.requires_grad_(True))
    lg = qwen3_forward(sd, train_tokens, lora)
    lora_loss = F.cross_entropy(lg.reshape(-1, VOCAB), train_targets.reshape(-1), ignore_index=-100)
    lora_loss.backward()
    out["lora_loss"] = lora_loss.detach().view(1)
    for name, (a, b) in lora.items():
        out["lora_A." + name] = a.detach()
        out["lora_B." + name] = b.detach()
        out["grad.lora_A." + name] = a.grad
        out["grad.lora_B." + name] = b.grad
    write_fixture(os.path.join(FIX, "checkpoint_hf_qwen3_expected.safetensors"), out)
    print(f"qwen3: loss {loss.item():.6f}, logits[0, 0, :3] {logits[0, 0, :3].tolist()}")


if __name__ == "__main__":
    write_checkpoint()
    print("wrote qwen3 fixtures")
