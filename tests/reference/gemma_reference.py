"""Gemma 1 fixtures for tests/checkpoint_gemma_test.ts.

Run with Debian's torch: /usr/bin/python3 tests/reference/gemma_reference.py

Writes:
  tests/fixtures/checkpoint_hf_gemma/{config.json,model.safetensors}  a tiny GemmaForCausalLM
      checkpoint laid out as Hugging Face's (Llama tensor names, rotate-half q/k rows,
      zero-centred norm weights, no lm_head: the output layer is the embedding). head_dim 8
      with hidden_size 24 and 4 heads (4 * 8 = 32 != 24, as gemma_7b's 16 * 256 != 3072) and
      one key/value head (multi-query attention, as gemma_2b).
  tests/fixtures/checkpoint_hf_gemma_expected.safetensors
      tokens (T) and logits (1, T, V) of gemma_forward() below; train_tokens / train_targets
      (B, T, -100 = ignored), loss (the mean cross-entropy over counted targets) and
      grad.<hf name> for every tensor of the file after loss.backward() (full fine-tune; the
      embedding's gradient includes the tied output layer's part).
  tests/fixtures/ops_geglu.safetensors  gate, up, dout (n) and out = gelu(gate, tanh) * up,
      dgate, dup from torch autograd.

gemma_forward() is transformers' GemmaForCausalLM forward (modeling_gemma, eager attention)
written out in plain fp32 torch, with each Gemma difference from Llama explicit:
  - embeddings times torch.tensor(hidden_size ** 0.5, dtype=x.dtype) (GemmaModel; torchtune's
    GemmaNormEmbeddings does the same),
  - GemmaRMSNorm: x * rsqrt(mean(x^2) + eps) * (1 + weight), computed in fp32,
  - GemmaMLP: down(gelu(gate(x), approximate="tanh") * up(x)),
  - attention with head_dim independent of hidden_size / heads, scaled by 1 / sqrt(head_dim),
  - logits = x @ embed_tokens.weight^T (tied).
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

# Tiny Gemma: dim 24, 2 layers, 4 heads of 8, 1 kv head, vocab 48, intermediate 40.
DIM, LAYERS, HEADS, KV, HD, VOCAB, HIDDEN = 24, 2, 4, 1, 8, 48, 40
EPS, THETA, MAX_POS = 1e-6, 10000.0, 64


def hf_state_dict(gen):
    sd = {"model.embed_tokens.weight": 0.3 * torch.randn(VOCAB, DIM, generator=gen)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = torch.randn(HEADS * HD, DIM, generator=gen) / math.sqrt(DIM)
        sd[p + "self_attn.k_proj.weight"] = torch.randn(KV * HD, DIM, generator=gen) / math.sqrt(DIM)
        sd[p + "self_attn.v_proj.weight"] = torch.randn(KV * HD, DIM, generator=gen) / math.sqrt(DIM)
        sd[p + "self_attn.o_proj.weight"] = torch.randn(DIM, HEADS * HD, generator=gen) / 8
        sd[p + "mlp.gate_proj.weight"] = torch.randn(HIDDEN, DIM, generator=gen) / math.sqrt(DIM)
        sd[p + "mlp.up_proj.weight"] = torch.randn(HIDDEN, DIM, generator=gen) / math.sqrt(DIM)
        sd[p + "mlp.down_proj.weight"] = torch.randn(DIM, HIDDEN, generator=gen) / math.sqrt(HIDDEN)
        # zero-centred, as Gemma stores them (the norm multiplies by 1 + weight)
        sd[p + "input_layernorm.weight"] = 0.3 * torch.randn(DIM, generator=gen)
        sd[p + "post_attention_layernorm.weight"] = 0.3 * torch.randn(DIM, generator=gen)
    sd["model.norm.weight"] = 0.3 * torch.randn(DIM, generator=gen)
    return sd


def gemma_rms(x, w):
    """GemmaRMSNorm.forward (fp32 throughout here)."""
    out = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + EPS)
    return (out * (1.0 + w.float())).type_as(x)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def gemma_forward(sd, tokens):
    """transformers' GemmaForCausalLM.forward, eager attention; tokens (B, T) -> logits (B, T, V)."""
    B, T = tokens.shape
    inv_freq = 1.0 / (THETA ** (torch.arange(0, HD, 2, dtype=torch.int64).float() / HD))
    freqs = torch.outer(torch.arange(T).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]  # (1, T, 1, HD)
    x = sd["model.embed_tokens.weight"][tokens]  # (B, T, C)
    x = x * torch.tensor(DIM ** 0.5, dtype=x.dtype)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        h = gemma_rms(x, sd[p + "input_layernorm.weight"])
        q = (h @ sd[p + "self_attn.q_proj.weight"].t()).view(B, T, HEADS, HD)
        k = (h @ sd[p + "self_attn.k_proj.weight"].t()).view(B, T, KV, HD)
        v = (h @ sd[p + "self_attn.v_proj.weight"].t()).view(B, T, KV, HD)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(HEADS // KV, dim=2)
        v = v.repeat_interleave(HEADS // KV, dim=2)
        s = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(HD)
        s = s.masked_fill(~mask, float("-inf"))
        att = torch.einsum("bhts,bshd->bthd", torch.softmax(s, -1), v).reshape(B, T, HEADS * HD)
        x = x + att @ sd[p + "self_attn.o_proj.weight"].t()
        h = gemma_rms(x, sd[p + "post_attention_layernorm.weight"])
        gate = h @ sd[p + "mlp.gate_proj.weight"].t()
        up = h @ sd[p + "mlp.up_proj.weight"].t()
        x = x + (F.gelu(gate, approximate="tanh") * up) @ sd[p + "mlp.down_proj.weight"].t()
    x = gemma_rms(x, sd["model.norm.weight"])
    return x @ sd["model.embed_tokens.weight"].t()


def write_checkpoint():
    gen = torch.Generator().manual_seed(11)
    sd = hf_state_dict(gen)
    d = os.path.join(FIX, "checkpoint_hf_gemma")
    os.makedirs(d, exist_ok=True)
    write_fixture(os.path.join(d, "model.safetensors"), sd)
    # the keys of google/gemma-2b's config.json (no tie_word_embeddings: Gemma ties by default)
    config = {
        "architectures": ["GemmaForCausalLM"], "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": 2, "eos_token_id": 1, "head_dim": HD,
        "hidden_act": "gelu", "hidden_size": DIM, "initializer_range": 0.02,
        "intermediate_size": HIDDEN, "max_position_embeddings": MAX_POS, "model_type": "gemma",
        "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "num_key_value_heads": KV,
        "pad_token_id": 0, "rms_norm_eps": EPS, "rope_scaling": None, "rope_theta": THETA,
        "torch_dtype": "float32", "use_cache": True, "vocab_size": VOCAB,
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    tokens = torch.tensor([(i * 7 + 3) % VOCAB for i in range(10)])
    with torch.no_grad():
        logits = gemma_forward(sd, tokens.view(1, -1))
    # one full fine-tuning step's loss and gradients
    B, T = 2, 6
    train_tokens = torch.randint(0, VOCAB, (B, T), generator=gen)
    train_targets = torch.randint(0, VOCAB, (B, T), generator=gen)
    train_targets[0, 0] = -100
    train_targets[1, 3] = -100
    params = {k: v.clone().requires_grad_(True) for k, v in sd.items()}
    lg = gemma_forward(params, train_tokens)
    loss = F.cross_entropy(lg.reshape(-1, VOCAB), train_targets.reshape(-1), ignore_index=-100)
    loss.backward()
    out = {"tokens": tokens, "logits": logits, "train_tokens": train_tokens,
           "train_targets": train_targets, "loss": loss.detach().view(1)}
    for k, v in params.items():
        out["grad." + k] = v.grad
    write_fixture(os.path.join(FIX, "checkpoint_hf_gemma_expected.safetensors"), out)
    print(f"gemma: loss {loss.item():.6f}, logits[0, 0, :3] {logits[0, 0, :3].tolist()}")


def write_geglu():
    gen = torch.Generator().manual_seed(5)
    n = 67
    gate = 3 * torch.randn(n, generator=gen)
    gate[:4] = torch.tensor([-9.0, -4.0, 0.0, 9.0])  # saturated tails and zero
    up = torch.randn(n, generator=gen)
    dout = torch.randn(n, generator=gen)
    g = gate.clone().requires_grad_(True)
    u = up.clone().requires_grad_(True)
    out = F.gelu(g, approximate="tanh") * u
    out.backward(dout)
    write_fixture(os.path.join(FIX, "ops_geglu.safetensors"), {
        "gate": gate, "up": up, "dout": dout, "out": out.detach(), "dgate": g.grad,
        "dup": u.grad})


if __name__ == "__main__":
    write_checkpoint()
    write_geglu()
    print("wrote gemma fixtures")
