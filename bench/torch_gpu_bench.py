"""PyTorch side of scripts/gpu_bench.ts (issue #10): a Llama-3.2-1B-shaped model on the GPU.

Same architecture as tune's llama3_2_1b (dim 2048, 16 layers, 32 heads, 8 kv heads, SwiGLU
hidden 8192, vocab 128256, tied embeddings, rope theta 500000; the llama3 rope scaling only
changes the rotary table, not the cost, and is left out), random initialisation N(0, 0.02).
Numerics: fp32 parameters and AdamW (fused when available) under
torch.autocast("cuda", bfloat16): fp32 master weights, bf16 matmuls and attention
(F.scaled_dot_product_attention, causal), loss in fp32. LoRA (rank 8, alpha 16, on q and v,
no dropout): base weights bf16 and frozen, adapters fp32. One training step is zero_grad,
forward, cross-entropy, backward, optimizer step, torch.cuda.synchronize().

--impl eager, or compile (torch.compile of the model; optimizer eager). Prints one JSON
line: {mode, impl, batch, seq, tokens_per_s, step_s, peak_bytes (max_memory_allocated),
reserved_bytes (max_memory_reserved), torch, gpu} or {mode, impl, batch, error}.

  python3 bench/torch_gpu_bench.py --mode full --impl eager --batch 4
  /usr/bin/python3 bench/torch_gpu_bench.py --mode lora --impl eager --batch 2 --device cpu --tiny
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

LLAMA3_2_1B = dict(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, hidden=8192, vocab=128256, theta=500000.0)
# --tiny: the shape of gpu_bench.ts --cpu-dry-run
TINY = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden=128, vocab=256, theta=500000.0)
LORA_RANK = 8
LORA_ALPHA = 16.0


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight.to(x.dtype)


class LoRALinear(nn.Module):
    """Frozen base linear plus (alpha / r) * x @ A^T @ B^T."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features).uniform_(-0.05, 0.05))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale


def rope_tables(hs, seq, theta):
    freqs = 1.0 / (theta ** (torch.arange(0, hs, 2).float() / hs))
    ang = torch.outer(torch.arange(seq).float(), freqs)
    return torch.cos(ang), torch.sin(ang)  # (T, HS/2)


def apply_rope(x, cos, sin):
    # x (B, T, NH, HS), half-split (HF/torchtune llama3 layout)
    x0, x1 = x.chunk(2, dim=-1)
    c = cos[None, :, None, :].to(x.dtype)
    s = sin[None, :, None, :].to(x.dtype)
    return torch.cat((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)


def sdpa(q, k, v):
    """Causal attention: F.scaled_dot_product_attention (torch 2.x), else the plain form (1.13)."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    T = q.shape[-2]
    att = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    att = att.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return att.softmax(-1) @ v


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

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = apply_rope(self.wq(x).view(B, T, self.nh, self.hs), cos, sin).transpose(1, 2)
        k = apply_rope(self.wk(x).view(B, T, self.nkv, self.hs), cos, sin).transpose(1, 2)
        v = self.wv(x).view(B, T, self.nkv, self.hs).transpose(1, 2)
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        y = sdpa(q, k, v)  # (B, NH, T, HS)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.attn_norm = RMSNorm(a["dim"])
        self.attn = Attention(a)
        self.mlp_norm = RMSNorm(a["dim"])
        self.w1 = nn.Linear(a["dim"], a["hidden"], bias=False)
        self.w2 = nn.Linear(a["hidden"], a["dim"], bias=False)
        self.w3 = nn.Linear(a["dim"], a["hidden"], bias=False)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.attn_norm(x), cos, sin)
        h = self.mlp_norm(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class Llama(nn.Module):
    def __init__(self, a, seq):
        super().__init__()
        self.emb = nn.Embedding(a["vocab"], a["dim"])
        self.layers = nn.ModuleList(Block(a) for _ in range(a["n_layers"]))
        self.norm = RMSNorm(a["dim"])
        cos, sin = rope_tables(a["dim"] // a["n_heads"], seq, a["theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, tokens):
        x = self.emb(tokens)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin)
        return F.linear(self.norm(x), self.emb.weight)  # tied output, (B, T, V)


def build(a, seq, mode, device):
    torch.manual_seed(0)
    # build on the device where torch supports it (2.x): no 5 GB host init and copy
    on_device = device.type == "cuda" and hasattr(torch, "set_default_device")
    if on_device:
        with device:
            model = Llama(a, seq)
    else:
        model = Llama(a, seq)
    for n, p in model.named_parameters():
        if p.dim() == 2:
            nn.init.normal_(p, std=0.02)
    if mode == "lora":
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in model.layers:
            layer.attn.wq = LoRALinear(layer.attn.wq, LORA_RANK, LORA_ALPHA)
            layer.attn.wv = LoRALinear(layer.attn.wv, LORA_RANK, LORA_ALPHA)
        model = model.to(device)
        for n, p in model.named_parameters():
            if "lora_" not in n:
                p.data = p.data.to(torch.bfloat16)  # frozen base in bf16 (tune's frozenDtype bf16)
    else:
        model = model.to(device)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["full", "lora"], required=True)
    ap.add_argument("--impl", choices=["eager", "compile"], default="eager")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    a = TINY if args.tiny else LLAMA3_2_1B
    base = dict(mode=args.mode, impl=args.impl, batch=args.batch, seq=args.seq)
    try:
        model = build(a, args.seq, args.mode, dev)
        train = [p for p in model.parameters() if p.requires_grad]
        try:
            opt = torch.optim.AdamW(train, lr=1e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01, fused=cuda)
        except (TypeError, RuntimeError):
            opt = torch.optim.AdamW(train, lr=1e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
        fwd = model
        if args.impl == "compile":
            try:
                fwd = torch.compile(model)
            except Exception as e:  # noqa: BLE001 - any failure is reported as such
                print(json.dumps({**base, "error": f"torch.compile failed: {type(e).__name__}: {e}"[:300]}))
                return
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, a["vocab"], (args.batch, args.seq + 1), generator=g).to(dev)
        tokens, targets = ids[:, :-1], ids[:, 1:]
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        amp_dtype = torch.bfloat16

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=amp_dtype):
                logits = fwd(tokens)
            loss = F.cross_entropy(logits.float().view(-1, a["vocab"]), targets.reshape(-1))
            loss.backward()
            opt.step()
            sync()

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            step()  # warm-up (and compilation)
            if args.impl == "compile":
                step()
        except Exception as e:  # noqa: BLE001
            if cuda and isinstance(e, torch.cuda.OutOfMemoryError):
                print(json.dumps({**base, "error": "out of memory"}))
            else:
                what = "torch.compile failed" if args.impl == "compile" else "step failed"
                print(json.dumps({**base, "error": f"{what}: {type(e).__name__}: {e}".split("\n")[0][:300]}))
            return
        times = []
        while len(times) < args.steps:
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        s = statistics.median(times)
        out = dict(
            base,
            tokens_per_s=args.batch * args.seq / s,
            step_s=s,
            peak_bytes=torch.cuda.max_memory_allocated() if cuda else None,
            reserved_bytes=torch.cuda.max_memory_reserved() if cuda else None,
            torch=torch.__version__,
            gpu=torch.cuda.get_device_name() if cuda else "cpu",
        )
        print(json.dumps(out))
    except Exception as e:  # noqa: BLE001
        msg = "out of memory" if cuda and isinstance(e, torch.cuda.OutOfMemoryError) else f"{type(e).__name__}: {e}"
        print(json.dumps({**base, "error": msg.split("\n")[0][:300]}))


if __name__ == "__main__":
    main()
