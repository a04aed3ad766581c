"""Phi-3 fixtures for tests/checkpoint_phi3_test.ts and tests/data_phi3_format_test.ts.

Run with Debian's torch and sentencepiece: /usr/bin/python3 tests/reference/phi3_reference.py

Writes:
  tests/fixtures/checkpoint_hf_phi3/{config.json,model.safetensors}  a tiny Phi3ForCausalLM
      checkpoint laid out as Hugging Face's: q, k, v FUSED in
      model.layers.N.self_attn.qkv_proj.weight (stacked on dim 0) and gate, up fused in
      model.layers.N.mlp.gate_up_proj.weight (gate rows first). GQA (4 heads, 2 kv heads) so
      the split must use the head counts, not thirds.
  tests/fixtures/checkpoint_hf_phi3_expected.safetensors  `tokens` and the `logits` (1, T, V)
      of phi3_forward() below: transformers' modeling_phi3 forward (fused projections sliced
      as Phi3Attention / Phi3MLP slice them, rotate-half rope, RMSNorm, SiLU gate) in plain
      fp32 torch. The script also checks that splitting the fused weights as torchtune's
      phi3_hf_to_tune does and running model_reference.model_forward ("half" layout) gives
      the same logits, so both references agree before anything is written.
  tests/fixtures/data/phi3_reference.json  ids of torchtune's Phi3MiniTokenizer.tokenize_messages
      (torchtune/models/phi3/_tokenizer.py, add_end_tokens True and False, and max_seq_len
      truncation) computed with the sentencepiece library on Llama 2's tokenizer.model (Phi-3
      Mini's tokenizer.model is Llama 2's 32000-piece model; its chat tokens 32000-32010 are
      added on top), read from tests/data/tokenizers/llama2/.
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from fixture_io import write_fixture  # noqa: E402
from model_reference import Ctx, model_forward  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")
SHARED = os.path.join(HERE, "..", "data")

# Tiny Phi-3: dim 16, 2 layers, 4 heads, 2 kv heads (HS 4), vocab 40, intermediate 24.
DIM, LAYERS, HEADS, KV, VOCAB, HIDDEN = 16, 2, 4, 2, 40, 24
HS = DIM // HEADS
EPS, THETA = 1e-5, 10000.0


def hf_state_dict(gen):
    sd = {"model.embed_tokens.weight": 0.5 * torch.randn(VOCAB, DIM, generator=gen)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        sd[p + "self_attn.qkv_proj.weight"] = (
            torch.randn((HEADS + 2 * KV) * HS, DIM, generator=gen) / math.sqrt(DIM))
        sd[p + "self_attn.o_proj.weight"] = torch.randn(DIM, HEADS * HS, generator=gen) / 4
        sd[p + "mlp.gate_up_proj.weight"] = torch.randn(2 * HIDDEN, DIM, generator=gen) / 4
        sd[p + "mlp.down_proj.weight"] = torch.randn(DIM, HIDDEN, generator=gen) / math.sqrt(HIDDEN)
        sd[p + "input_layernorm.weight"] = 1.0 + 0.1 * torch.randn(DIM, generator=gen)
        sd[p + "post_attention_layernorm.weight"] = 1.0 + 0.1 * torch.randn(DIM, generator=gen)
    sd["model.norm.weight"] = 1.0 + 0.1 * torch.randn(DIM, generator=gen)
    sd["lm_head.weight"] = torch.randn(VOCAB, DIM, generator=gen) / 4
    return sd


def rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def phi3_forward(sd, tokens):
    """transformers' Phi3ForCausalLM.forward, eager attention, one sequence (T)."""
    T = tokens.shape[0]
    inv_freq = 1.0 / (THETA ** (torch.arange(0, HS, 2).float() / HS))
    freqs = torch.outer(torch.arange(T).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]  # (T, 1, HS)
    x = sd["model.embed_tokens.weight"][tokens]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        h = rms(x, sd[p + "input_layernorm.weight"])
        qkv = h @ sd[p + "self_attn.qkv_proj.weight"].t()
        qp = HEADS * HS
        q = qkv[..., :qp].view(T, HEADS, HS)
        k = qkv[..., qp:qp + KV * HS].view(T, KV, HS)
        v = qkv[..., qp + KV * HS:].view(T, KV, HS)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = HEADS // KV
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = torch.einsum("thd,shd->hts", q, k) / math.sqrt(HS)
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        att = torch.einsum("hts,shd->thd", torch.softmax(s, -1), v).reshape(T, qp)
        x = x + att @ sd[p + "self_attn.o_proj.weight"].t()
        h = rms(x, sd[p + "post_attention_layernorm.weight"])
        up = h @ sd[p + "mlp.gate_up_proj.weight"].t()
        gate, up = up.chunk(2, dim=-1)
        x = x + (up * torch.nn.functional.silu(gate)) @ sd[p + "mlp.down_proj.weight"].t()
    x = rms(x, sd["model.norm.weight"])
    return x @ sd["lm_head.weight"].t()  # (T, V)


def split_to_tune(sd):
    """torchtune's phi3_hf_to_tune, with the q/k/v row counts of GQA."""
    P = {"tok_embeddings.weight": sd["model.embed_tokens.weight"],
         "norm.scale": sd["model.norm.weight"], "output.weight": sd["lm_head.weight"]}
    for i in range(LAYERS):
        p, t = f"model.layers.{i}.", f"layers.{i}."
        q, k, v = sd[p + "self_attn.qkv_proj.weight"].split([HEADS * HS, KV * HS, KV * HS], 0)
        w1, w3 = sd[p + "mlp.gate_up_proj.weight"].chunk(2, 0)
        P.update({t + "attn.q_proj.weight": q, t + "attn.k_proj.weight": k,
                  t + "attn.v_proj.weight": v,
                  t + "attn.output_proj.weight": sd[p + "self_attn.o_proj.weight"],
                  t + "mlp.w1.weight": w1, t + "mlp.w3.weight": w3,
                  t + "mlp.w2.weight": sd[p + "mlp.down_proj.weight"],
                  t + "sa_norm.scale": sd[p + "input_layernorm.weight"],
                  t + "mlp_norm.scale": sd[p + "post_attention_layernorm.weight"]})
    return P


def write_checkpoint():
    gen = torch.Generator().manual_seed(3)
    sd = hf_state_dict(gen)
    d = os.path.join(FIX, "checkpoint_hf_phi3")
    os.makedirs(d, exist_ok=True)
    write_fixture(os.path.join(d, "model.safetensors"), sd)
    config = {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "vocab_size": VOCAB,
        "hidden_size": DIM, "intermediate_size": HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV, "rms_norm_eps": EPS,
        "rope_theta": THETA, "rope_scaling": None, "max_position_embeddings": 64,
        "original_max_position_embeddings": 64, "sliding_window": 63,
        "tie_word_embeddings": False, "hidden_act": "silu", "bos_token_id": 1,
        "eos_token_id": 32000, "pad_token_id": 32000, "torch_dtype": "float32",
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    tokens = torch.tensor([(i * 7 + 3) % VOCAB for i in range(12)])
    with torch.no_grad():
        logits = phi3_forward(sd, tokens)
        cfg = dict(vocab=VOCAB, dim=DIM, n_layers=LAYERS, n_heads=HEADS, n_kv_heads=KV,
                   hidden=HIDDEN, norm_eps=EPS, rope_theta=THETA, rope_scaling=None,
                   rope_layout="half", tied=False, qkv_bias=False)
        other = model_forward(Ctx(cfg), split_to_tune(sd), tokens.view(1, -1))[0]
    diff = (logits - other).abs().max().item()
    assert diff < 1e-5, f"phi3_forward and model_forward disagree by {diff}"
    print(f"phi3_forward vs split + model_forward: max |diff| {diff:.2e}")
    write_fixture(os.path.join(FIX, "checkpoint_hf_phi3_expected.safetensors"),
                  {"tokens": tokens, "logits": logits.unsqueeze(0)})


# ---------------------------------------------------------------- chat format

PHI3_SPECIAL_TOKENS = {
    "<|endoftext|>": 32000, "<|assistant|>": 32001, "<|placeholder1|>": 32002,
    "<|placeholder2|>": 32003, "<|placeholder3|>": 32004, "<|placeholder4|>": 32005,
    "<|system|>": 32006, "<|end|>": 32007, "<|placeholder5|>": 32008,
    "<|placeholder6|>": 32009, "<|user|>": 32010,
}


def tokenize_messages(sp, messages, add_end_tokens, max_seq_len=None):
    """torchtune Phi3MiniTokenizer.tokenize_messages (main, 2026), messages as (role, text, masked)."""
    def encode(text, trim=False):
        if trim:  # SentencePieceBaseTokenizer.encode(trim_leading_whitespace=True), prefix "\n"
            pre = sp.encode("\n")
            return sp.encode("\n" + text)[len(pre):]
        return sp.encode(text)

    tokens, mask = [], []
    start_of_turn, end_of_turn = True, False
    nl = encode("\n")
    role_ids = {"user": 32010, "assistant": 32001, "system": 32006}
    for role, text, masked in messages:
        if start_of_turn:
            tokens.append(sp.bos_id())
            mask.append(masked)
        tokens.append(role_ids[role])
        mask.append(masked)
        if role == "assistant":
            end_of_turn = True
        tokens += nl
        mask += [masked] * len(nl)
        ids = encode(text.rstrip(" "), trim=True) + [PHI3_SPECIAL_TOKENS["<|end|>"]] + nl
        tokens += ids
        mask += [masked] * len(ids)
        if end_of_turn and add_end_tokens:
            tokens.append(PHI3_SPECIAL_TOKENS["<|endoftext|>"])
            mask.append(masked)
            end_of_turn = False
            start_of_turn = True
        else:
            start_of_turn = False
        if max_seq_len and len(tokens) >= max_seq_len:
            break
    if max_seq_len and len(tokens) >= max_seq_len:
        # torchtune.data._utils.truncate, right: keep max_seq_len, force the last to eos
        tokens, mask = tokens[:max_seq_len], mask[:max_seq_len]
        if add_end_tokens:
            tokens[-1] = PHI3_SPECIAL_TOKENS["<|endoftext|>"]
            mask[-1] = True
    return tokens, mask


def write_chat_reference():
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(
        model_file=os.path.join(SHARED, "tokenizers", "llama2", "tokenizer.model"))
    conv = [("system", "You are terse.", True), ("user", "Hi there ", True),
            ("assistant", "Hello! How can I help?", False), ("user", "  2+2?", True),
            ("assistant", "4\nDone.", False)]
    cases = []
    for name, msgs, end, max_len in [
        ("conversation", conv, True, None),
        ("inference", conv[:2], False, None),
        ("truncated", conv, True, 20),
    ]:
        tokens, mask = tokenize_messages(sp, msgs, end, max_len)
        cases.append({"name": name, "messages": [
            {"role": r, "content": c, "masked": m} for r, c, m in msgs],
            "add_end_tokens": end, "max_seq_len": max_len, "tokens": tokens, "mask": mask})
    out = os.path.join(FIX, "data", "phi3_reference.json")
    with open(out, "w") as f:
        json.dump({"newline": sp.encode("\n"), "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    write_checkpoint()
    write_chat_reference()
    print("wrote phi3 fixtures")
