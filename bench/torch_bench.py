"""PyTorch side of `deno task bench`: the same steps as bench/bench.ts in torch eager.

A straightforward Llama (llama2.c's model.py style: RMSNorm, interleaved rotary embedding,
grouped-query attention by repeating k/v heads, SwiGLU MLP, output tied to the embedding),
trained with torch.optim.AdamW, LoRA (rank 8, alpha 16) on q and v, and greedy generation
with a KV cache. Prints one JSON object per measured row on stdout:
  {"shape", "mode", "impl": "pytorch", "tokens_per_s", "seconds"}
`--mode memory` runs one full fine-tuning step and prints {"peak_rss_bytes"} (VmHWM).
`--mode serve` answers bench.ts over stdin/stdout so it can interleave tune and PyTorch
repetitions (the host is shared: interleaving exposes both to the same load).

Run with Debian's python3-torch: /usr/bin/python3 bench/torch_bench.py --shape 15M --mode full
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = {
    # dim, layers, heads, kv heads, hidden, vocab, seq, batch
    "15M": dict(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, hidden=768, vocab=32000, seq=256, batch=4),
    "260K": dict(dim=64, n_layers=5, n_heads=8, n_kv_heads=4, hidden=172, vocab=512, seq=512, batch=8),
}
LORA_RANK = 8
LORA_ALPHA = 16.0
GEN_TOKENS = 256


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LoRALinear(nn.Module):
    """Frozen base linear plus (alpha / r) * x @ A^T @ B^T."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features).uniform_(-0.05, 0.05))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale


def rope_tables(hs, seq, theta=10000.0):
    freqs = 1.0 / (theta ** (torch.arange(0, hs, 2).float() / hs))
    ang = torch.outer(torch.arange(seq).float(), freqs)
    return torch.cos(ang), torch.sin(ang)  # (T, HS/2)


def apply_rope(x, cos, sin):
    # x (B, T, NH, HS) with interleaved pairs (2i, 2i+1)
    xr = x.reshape(*x.shape[:-1], -1, 2)
    x0, x1 = xr[..., 0], xr[..., 1]
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(3)


class Attention(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.nh, self.nkv = a["n_heads"], a["n_kv_heads"]
        self.hs = a["dim"] // self.nh
        d = a["dim"]
        self.wq = nn.Linear(d, self.nh * self.hs, bias=False)
        self.wk = nn.Linear(d, self.nkv * self.hs, bias=False)
        self.wv = nn.Linear(d, self.nkv * self.hs, bias=False)
        self.wo = nn.Linear(self.nh * self.hs, d, bias=False)
        self.cache_k = None
        self.cache_v = None

    def forward(self, x, cos, sin, pos=None):
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.nh, self.hs)
        k = self.wk(x).view(B, T, self.nkv, self.hs)
        v = self.wv(x).view(B, T, self.nkv, self.hs)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if pos is not None:  # generation: write the cache, attend to everything so far
            self.cache_k[:, pos:pos + T] = k
            self.cache_v[:, pos:pos + T] = v
            k = self.cache_k[:, :pos + T]
            v = self.cache_v[:, :pos + T]
        rep = self.nh // self.nkv
        if rep > 1:
            k = k.repeat_interleave(rep, dim=2)
            v = v.repeat_interleave(rep, dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        s = (q @ k.transpose(-2, -1)) / math.sqrt(self.hs)  # (B, NH, T, Tk)
        Tk = k.shape[2]
        if T > 1:
            mask = torch.full((T, Tk), float("-inf")).triu(Tk - T + 1)
            s = s + mask
        p = F.softmax(s, dim=-1)
        o = (p @ v).transpose(1, 2).reshape(B, T, -1)
        return self.wo(o)


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.attn = Attention(a)
        self.sa_norm = RMSNorm(a["dim"])
        self.mlp_norm = RMSNorm(a["dim"])
        self.w1 = nn.Linear(a["dim"], a["hidden"], bias=False)
        self.w2 = nn.Linear(a["hidden"], a["dim"], bias=False)
        self.w3 = nn.Linear(a["dim"], a["hidden"], bias=False)

    def forward(self, x, cos, sin, pos=None):
        h = x + self.attn(self.sa_norm(x), cos, sin, pos)
        y = self.mlp_norm(h)
        return h + self.w2(F.silu(self.w1(y)) * self.w3(y))


class Llama(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = a
        self.emb = nn.Embedding(a["vocab"], a["dim"])
        self.layers = nn.ModuleList(Block(a) for _ in range(a["n_layers"]))
        self.norm = RMSNorm(a["dim"])
        self.out = nn.Linear(a["dim"], a["vocab"], bias=False)
        self.out.weight = self.emb.weight  # tied, as llama2.c's stories15M
        cos, sin = rope_tables(a["dim"] // a["n_heads"], max(a["seq"], GEN_TOKENS + 1))
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for n, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, tokens, pos=None):
        T = tokens.shape[1]
        p0 = 0 if pos is None else pos
        cos, sin = self.cos[p0:p0 + T], self.sin[p0:p0 + T]
        x = self.emb(tokens)
        for l in self.layers:
            x = l(x, cos, sin, pos)
        return self.out(self.norm(x))


def build(shape, lora):
    a = SHAPES[shape]
    torch.manual_seed(0)
    m = Llama(a)
    if lora:
        for p in m.parameters():
            p.requires_grad_(False)
        for l in m.layers:
            l.attn.wq = LoRALinear(l.attn.wq, LORA_RANK, LORA_ALPHA)
            l.attn.wv = LoRALinear(l.attn.wv, LORA_RANK, LORA_ALPHA)
    return m, a


def train_runner(shape, mode):
    """One timed training step per call (after one warm-up step here)."""
    m, a = build(shape, mode == "lora")
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(1)
    B, T, V = a["batch"], a["seq"], a["vocab"]
    data = torch.randint(0, V, (B, T + 1), generator=g)
    x, y = data[:, :-1], data[:, 1:]

    def step():
        opt.zero_grad(set_to_none=True)
        logits = m(x)
        loss = F.cross_entropy(logits.view(-1, V), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()

    step()  # warm-up

    def once():
        t0 = time.perf_counter()
        step()
        return time.perf_counter() - t0

    return once, B * T


def generate_runner(shape):
    """One timed greedy generation of GEN_TOKENS tokens per call (after one warm-up)."""
    m, a = build(shape, False)
    m.eval()

    @torch.no_grad()
    def once():
        for l in m.layers:
            at = l.attn
            at.cache_k = torch.zeros(1, GEN_TOKENS + 1, at.nkv, at.hs)
            at.cache_v = torch.zeros(1, GEN_TOKENS + 1, at.nkv, at.hs)
        t0 = time.perf_counter()
        tok = torch.tensor([[1]])
        for pos in range(GEN_TOKENS):
            logits = m(tok, pos)
            tok = logits[:, -1].argmax(-1, keepdim=True)
        return time.perf_counter() - t0

    once()  # warm-up
    return once, GEN_TOKENS


def runner(shape, mode):
    return generate_runner(shape) if mode == "generate" else train_runner(shape, mode)


def peak_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def serve():
    """Line protocol for bench.ts: "prepare SHAPE MODE" builds and warms up a runner and
    answers {"ready": true}; "run" times one repetition and answers {"seconds", "tokens"}."""
    import sys
    cur = None
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "prepare":
            cur = None
            cur = runner(cmd[1], cmd[2])
            out = {"ready": True}
        elif cmd[0] == "run":
            once, tokens = cur
            out = {"seconds": once(), "tokens": tokens}
        else:
            out = {"error": f"unknown command {cmd[0]}"}
        print(json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=list(SHAPES))
    ap.add_argument("--mode", choices=["full", "lora", "generate", "memory", "serve"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    o = ap.parse_args()
    torch.set_num_threads(o.threads)
    if o.mode == "serve":
        serve()
        return
    if o.mode == "memory":
        once, _ = train_runner(o.shape, "full")
        once()
        print(json.dumps({"shape": o.shape, "mode": "memory", "impl": "pytorch",
                          "peak_rss_bytes": peak_rss()}))
        return
    once, tokens = runner(o.shape, o.mode)
    sec = min(once() for _ in range(o.reps))
    print(json.dumps({"shape": o.shape, "mode": o.mode, "impl": "pytorch",
                      "tokens_per_s": tokens / sec, "seconds": sec}))


if __name__ == "__main__":
    main()
