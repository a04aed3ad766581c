"""Sliding-window and Gemma 2 fixtures for tests/checkpoint_gemma2_test.ts.

Run with Debian's torch: /usr/bin/python3 tests/reference/gemma2_reference.py

Writes, for NAME in (mistral_window, gemma2):
  tests/fixtures/checkpoint_hf_NAME/{config.json,model.safetensors}  a tiny checkpoint laid out
      as Hugging Face's (rotate-half q/k rows).
  tests/fixtures/checkpoint_hf_NAME_expected.safetensors
      tokens (T = 10) and logits (1, T, V) of forward() below; train_tokens / train_targets
      (B = 2, T = 6, -100 = ignored), loss and grad.<hf name> of every tensor after
      loss.backward(); lora_A.<hf weight name> (r, in) / lora_B.<hf weight name> (out, r)
      adapters on q, k, v, o, gate, up, down (rank 2, alpha 4), lora_loss and their gradients.

mistral_window: MistralForCausalLM with sliding_window 4, shorter than both sequences.
gemma2: Gemma2ForCausalLM with every Gemma 2 feature on: sliding window 3 on the even layers
  (HF's default layer_types: layer 0 and 2 "sliding_attention", 1 "full_attention"), attention
  logit soft-cap 2 and final logit soft-cap 3 (small, so the tanh bends the values), attention
  scale 1/sqrt(query_pre_attn_scalar 12) with head_dim 8 (!= hidden 24 / 4 heads), norms before
  and after attention and the MLP (Gemma's x * (1 + w) RMSNorm), GeGLU (tanh GELU), embeddings
  times sqrt(hidden) and a tied lm_head.

forward() is transformers' MistralForCausalLM / Gemma2ForCausalLM forward (eager attention)
written out in plain fp32 torch; a key at position j is visible to the query at position i
when j <= i and i - j < sliding_window (transformers' sliding_window_causal mask).
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
RANK, ALPHA = 2, 4.0

ARCHS = {
    "mistral_window": dict(gemma2=False, dim=24, layers=2, heads=4, kv=2, hd=6, vocab=48,
                           hidden=40, eps=1e-5, theta=10000.0, window=4),
    "gemma2": dict(gemma2=True, dim=24, layers=3, heads=4, kv=2, hd=8, vocab=48, hidden=40,
                   eps=1e-6, theta=10000.0, window=3, attn_cap=2.0, final_cap=3.0, qpas=12),
}


def hf_state_dict(a, gen):
    dim, hd, hidden = a["dim"], a["hd"], a["hidden"]
    sd = {"model.embed_tokens.weight": (0.5 if a["gemma2"] else 1.0) * torch.randn(a["vocab"], dim, generator=gen)}
    norm = (lambda: 0.3 * torch.randn(dim, generator=gen)) if a["gemma2"] else (
        lambda: 1 + 0.2 * torch.randn(dim, generator=gen))
    for i in range(a["layers"]):
        p = f"model.layers.{i}."
        # q/k weights large enough that the attention soft-cap and the window matter
        qk = 3.0 if a["gemma2"] else 1.5
        sd[p + "self_attn.q_proj.weight"] = qk * torch.randn(a["heads"] * hd, dim, generator=gen) / math.sqrt(dim)
        sd[p + "self_attn.k_proj.weight"] = qk * torch.randn(a["kv"] * hd, dim, generator=gen) / math.sqrt(dim)
        sd[p + "self_attn.v_proj.weight"] = torch.randn(a["kv"] * hd, dim, generator=gen) / math.sqrt(dim)
        sd[p + "self_attn.o_proj.weight"] = torch.randn(dim, a["heads"] * hd, generator=gen) / 6
        sd[p + "mlp.gate_proj.weight"] = torch.randn(hidden, dim, generator=gen) / math.sqrt(dim)
        sd[p + "mlp.up_proj.weight"] = torch.randn(hidden, dim, generator=gen) / math.sqrt(dim)
        sd[p + "mlp.down_proj.weight"] = torch.randn(dim, hidden, generator=gen) / math.sqrt(hidden)
        sd[p + "input_layernorm.weight"] = norm()
        sd[p + "post_attention_layernorm.weight"] = norm()
        if a["gemma2"]:
            sd[p + "pre_feedforward_layernorm.weight"] = norm()
            sd[p + "post_feedforward_layernorm.weight"] = norm()
    sd["model.norm.weight"] = norm()
    if not a["gemma2"]:
        sd["lm_head.weight"] = 0.5 * torch.randn(a["vocab"], dim, generator=gen)
    return sd


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(a, sd, tokens, lora=None):
    """tokens (B, T) -> logits (B, T, V); `lora` as in qwen3_reference.py (PEFT, dropout 0)."""
    g2 = a["gemma2"]
    heads, kv, hd, eps = a["heads"], a["kv"], a["hd"], a["eps"]

    def lin(h, name):
        out = h @ sd[name].t()
        if lora and name in lora:
            la, lb = lora[name]
            out = out + (ALPHA / RANK) * ((h @ la.t()) @ lb.t())
        return out

    def rms(x, w):
        n = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return n * (1.0 + w) if g2 else w * n

    B, T = tokens.shape
    inv_freq = 1.0 / (a["theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = torch.outer(torch.arange(T).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]
    x = sd["model.embed_tokens.weight"][tokens]
    if g2:
        x = x * torch.tensor(a["dim"] ** 0.5, dtype=x.dtype)
    i_pos = torch.arange(T).view(T, 1)
    j_pos = torch.arange(T).view(1, T)
    causal = j_pos <= i_pos
    sliding = causal & (i_pos - j_pos < a["window"])
    scale = a["qpas"] ** -0.5 if g2 else hd ** -0.5
    for i in range(a["layers"]):
        p = f"model.layers.{i}."
        local = (i % 2 == 0) if g2 else True
        mask = sliding if local else causal
        h = rms(x, sd[p + "input_layernorm.weight"])
        q = lin(h, p + "self_attn.q_proj.weight").view(B, T, heads, hd)
        k = lin(h, p + "self_attn.k_proj.weight").view(B, T, kv, hd)
        v = lin(h, p + "self_attn.v_proj.weight").view(B, T, kv, hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv, dim=2)
        v = v.repeat_interleave(heads // kv, dim=2)
        s = torch.einsum("bthd,bshd->bhts", q, k) * scale
        if g2:
            s = torch.tanh(s / a["attn_cap"]) * a["attn_cap"]
        s = s.masked_fill(~mask, float("-inf"))
        att = torch.einsum("bhts,bshd->bthd", torch.softmax(s, -1), v).reshape(B, T, heads * hd)
        o = lin(att, p + "self_attn.o_proj.weight")
        if g2:
            x = x + rms(o, sd[p + "post_attention_layernorm.weight"])
            h = rms(x, sd[p + "pre_feedforward_layernorm.weight"])
        else:
            x = x + o
            h = rms(x, sd[p + "post_attention_layernorm.weight"])
        gate = lin(h, p + "mlp.gate_proj.weight")
        up = lin(h, p + "mlp.up_proj.weight")
        act = F.gelu(gate, approximate="tanh") if g2 else F.silu(gate)
        m = lin(act * up, p + "mlp.down_proj.weight")
        x = x + (rms(m, sd[p + "post_feedforward_layernorm.weight"]) if g2 else m)
    x = rms(x, sd["model.norm.weight"])
    logits = x @ sd["model.embed_tokens.weight"].t() if g2 else lin(x, "lm_head.weight")
    if g2:
        logits = torch.tanh(logits / a["final_cap"]) * a["final_cap"]
    return logits


def config_json(name, a):
    if a["gemma2"]:
        # the keys of google/gemma-2-2b's config.json
        return {
            "architectures": ["Gemma2ForCausalLM"], "attention_bias": False,
            "attention_dropout": 0.0, "attn_logit_softcapping": a["attn_cap"], "bos_token_id": 2,
            "cache_implementation": "hybrid", "eos_token_id": 1,
            "final_logit_softcapping": a["final_cap"], "head_dim": a["hd"],
            "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
            "hidden_size": a["dim"], "initializer_range": 0.02, "intermediate_size": a["hidden"],
            "max_position_embeddings": 64, "model_type": "gemma2",
            "num_attention_heads": a["heads"], "num_hidden_layers": a["layers"],
            "num_key_value_heads": a["kv"], "pad_token_id": 0,
            "query_pre_attn_scalar": a["qpas"], "rms_norm_eps": a["eps"],
            "rope_theta": a["theta"], "sliding_window": a["window"], "torch_dtype": "float32",
            "use_cache": True, "vocab_size": a["vocab"],
        }
    # the keys of mistralai/Mistral-7B-v0.1's config.json
    return {
        "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
        "head_dim": a["hd"], "hidden_act": "silu", "hidden_size": a["dim"],
        "initializer_range": 0.02, "intermediate_size": a["hidden"],
        "max_position_embeddings": 64, "model_type": "mistral",
        "num_attention_heads": a["heads"], "num_hidden_layers": a["layers"],
        "num_key_value_heads": a["kv"], "rms_norm_eps": a["eps"], "rope_theta": a["theta"],
        "sliding_window": a["window"], "tie_word_embeddings": False, "torch_dtype": "float32",
        "use_cache": True, "vocab_size": a["vocab"],
    }


def write(name, seed):
    a = ARCHS[name]
    gen = torch.Generator().manual_seed(seed)
    sd = hf_state_dict(a, gen)
    d = os.path.join(FIX, "checkpoint_hf_" + name)
    os.makedirs(d, exist_ok=True)
    write_fixture(os.path.join(d, "model.safetensors"), sd)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config_json(name, a), f, indent=2)
        f.write("\n")
    V = a["vocab"]
    tokens = torch.tensor([(i * 7 + 3) % V for i in range(10)])
    with torch.no_grad():
        logits = forward(a, sd, tokens.view(1, -1))
        # control: the same model without any window (how far off ignoring it would be)
        nowin = forward(dict(a, window=1000), sd, tokens.view(1, -1))
    B, T = 2, 6
    train_tokens = torch.randint(0, V, (B, T), generator=gen)
    train_targets = torch.randint(0, V, (B, T), generator=gen)
    train_targets[0, 0] = -100
    train_targets[1, 3] = -100
    params = {k: v.clone().requires_grad_(True) for k, v in sd.items()}
    lg = forward(a, params, train_tokens)
    loss = F.cross_entropy(lg.reshape(-1, V), train_targets.reshape(-1), ignore_index=-100)
    loss.backward()
    out = {"tokens": tokens, "logits": logits, "train_tokens": train_tokens,
           "train_targets": train_targets, "loss": loss.detach().view(1)}
    for k, v in params.items():
        out["grad." + k] = v.grad
    lora = {}
    for n, w in sd.items():
        if n.endswith("proj.weight"):
            la = torch.randn(RANK, w.shape[1], generator=gen) / math.sqrt(w.shape[1])
            lb = 0.3 * torch.randn(w.shape[0], RANK, generator=gen)
            lora[n] = (la.requires_grad_(True), lb.requires_grad_(True))
    lg = forward(a, sd, train_tokens, lora)
    lora_loss = F.cross_entropy(lg.reshape(-1, V), train_targets.reshape(-1), ignore_index=-100)
    lora_loss.backward()
    out["lora_loss"] = lora_loss.detach().view(1)
    for n, (la, lb) in lora.items():
        out["lora_A." + n] = la.detach()
        out["lora_B." + n] = lb.detach()
        out["grad.lora_A." + n] = la.grad
        out["grad.lora_B." + n] = lb.grad
    write_fixture(os.path.join(FIX, f"checkpoint_hf_{name}_expected.safetensors"), out)
    off = (nowin - logits).abs().max().item()
    print(f"{name}: loss {loss.item():.6f}, lora loss {lora_loss.item():.6f}, "
          f"logits without the window off by {off:.3f}")


if __name__ == "__main__":
    write("mistral_window", 31)
    write("gemma2", 37)
    print("wrote sliding-window and gemma2 fixtures")
