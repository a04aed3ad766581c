"""PyTorch reference for the backend op parity tests (tests/cpu_ops_test.ts).

Run with Debian's torch: /usr/bin/python3 tests/reference/ops_reference.py
Writes tests/fixtures/ops_<op>.safetensors: random inputs (fixed seed), outputs, and every
gradient from torch autograd. Sizes are small but odd so indexing bugs show.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from fixture_io import write_fixture  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures")


def save(name, tensors, meta=None):
    write_fixture(os.path.join(OUT, f"ops_{name}.safetensors"), tensors, meta)


def matmul():
    g = torch.Generator().manual_seed(1)
    M, K, N = 10, 13, 7
    inp = torch.randn(M, K, generator=g).requires_grad_()
    weight = torch.randn(N, K, generator=g).requires_grad_()
    bias = torch.randn(N, generator=g).requires_grad_()
    out = F.linear(inp, weight, bias)
    dout = torch.randn(M, N, generator=g)
    out.backward(dout)
    save("matmul", {"inp": inp, "weight": weight, "bias": bias, "out": out,
                    "out_nobias": F.linear(inp, weight), "dout": dout, "dinp": inp.grad,
                    "dweight": weight.grad, "dbias": bias.grad},
         {"M": M, "K": K, "N": N})


def embedding():
    g = torch.Generator().manual_seed(2)
    V, C = 37, 24
    tokens = torch.tensor([3, 0, 36, 3, 17, 5, 3, 22, 36, 9], dtype=torch.int64)
    table = torch.randn(V, C, generator=g).requires_grad_()
    out = F.embedding(tokens, table)
    dout = torch.randn(out.shape, generator=g)
    out.backward(dout)
    save("embedding", {"tokens": tokens, "table": table, "out": out, "dout": dout,
                       "dtable": table.grad}, {"N": len(tokens), "C": C, "V": V})


def rmsnorm():
    g = torch.Generator().manual_seed(3)
    N, C, eps = 10, 24, 1e-5
    inp = (torch.randn(N, C, generator=g) * 2 + 0.3).requires_grad_()
    weight = (torch.rand(C, generator=g) + 0.5).requires_grad_()
    # torchtune's RMSNorm: x * rsqrt(mean(x^2) + eps) * weight, in fp32.
    rstd = torch.rsqrt(inp.pow(2).mean(-1, keepdim=True) + eps)
    out = inp * rstd * weight
    dout = torch.randn(N, C, generator=g)
    out.backward(dout)
    save("rmsnorm", {"inp": inp, "weight": weight, "out": out, "rstd": rstd.reshape(N),
                     "dout": dout, "dinp": inp.grad, "dweight": weight.grad},
         {"N": N, "C": C, "eps": eps})


def rope_tables(Tmax, HS, base=10000.0):
    freqs = 1.0 / (base ** (torch.arange(0, HS, 2)[: HS // 2].float() / HS))
    angles = torch.outer(torch.arange(Tmax).float(), freqs)  # (Tmax, HS/2)
    return angles


def rope():
    g = torch.Generator().manual_seed(4)
    B, T, NH, HS, pos, Tmax = 2, 5, 3, 8, 3, 12
    angles = rope_tables(Tmax, HS)
    cos, sin = angles.cos(), angles.sin()
    x = torch.randn(B, T, NH, HS, generator=g)
    dout = torch.randn(B, T, NH, HS, generator=g)
    a = angles[pos:pos + T]  # (T, HS/2)

    # Meta / llama2.c: view_as_complex over pairs (2i, 2i+1).
    xi = x.clone().requires_grad_()
    freqs_cis = torch.polar(torch.ones_like(a), a).view(1, T, 1, HS // 2)
    xc = torch.view_as_complex(xi.reshape(B, T, NH, HS // 2, 2))
    out_i = torch.view_as_real(xc * freqs_cis).flatten(3)
    out_i.backward(dout)

    # Hugging Face: x * cos + rotate_half(x) * sin over pairs (i, i + HS/2).
    xh = x.clone().requires_grad_()
    cos_h = torch.cat([a.cos(), a.cos()], -1).view(1, T, 1, HS)
    sin_h = torch.cat([a.sin(), a.sin()], -1).view(1, T, 1, HS)
    rot = torch.cat([-xh[..., HS // 2:], xh[..., : HS // 2]], -1)
    out_h = xh * cos_h + rot * sin_h
    out_h.backward(dout)
    save("rope", {"x": x, "cos": cos, "sin": sin, "out_interleaved": out_i,
                  "out_half": out_h, "dout": dout, "dx_interleaved": xi.grad,
                  "dx_half": xh.grad},
         {"B": B, "T": T, "NH": NH, "HS": HS, "pos": pos, "Tmax": Tmax})


def attention(name, B, T, NH, NKV, HS, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, NH, HS, generator=g).requires_grad_()
    k = torch.randn(B, T, NKV, HS, generator=g).requires_grad_()
    v = torch.randn(B, T, NKV, HS, generator=g).requires_grad_()
    rep = NH // NKV
    qh = q.transpose(1, 2)  # (B, NH, T, HS)
    kh = k.transpose(1, 2).repeat_interleave(rep, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(rep, dim=1)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(HS)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, -1)  # (B, NH, T)
    out = (torch.softmax(scores, -1) @ vh).transpose(1, 2).contiguous()  # (B, T, NH, HS)
    dout = torch.randn(B, T, NH, HS, generator=g)
    out.backward(dout)
    save(name, {"q": q, "k": k, "v": v, "out": out, "lse": lse, "dout": dout,
                "dq": q.grad, "dk": k.grad, "dv": v.grad},
         {"B": B, "T": T, "NH": NH, "NKV": NKV, "HS": HS})


def swiglu():
    g = torch.Generator().manual_seed(5)
    N, H = 10, 19
    gate = (torch.randn(N, H, generator=g) * 3).requires_grad_()
    up = torch.randn(N, H, generator=g).requires_grad_()
    out = F.silu(gate) * up
    dout = torch.randn(N, H, generator=g)
    out.backward(dout)
    save("swiglu", {"gate": gate, "up": up, "out": out, "dout": dout, "dgate": gate.grad,
                    "dup": up.grad}, {"n": N * H})


def cross_entropy():
    g = torch.Generator().manual_seed(6)
    N, V = 10, 37
    logits = (torch.randn(N, V, generator=g) * 4).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=g)
    targets[2] = -100
    targets[7] = -100
    losses = F.cross_entropy(logits, targets, ignore_index=-100, reduction="none")
    loss = F.cross_entropy(logits, targets, ignore_index=-100)  # mean over non-ignored
    loss.backward()
    save("cross_entropy", {"logits": logits, "targets": targets, "losses": losses,
                           "loss": loss.reshape(1), "dlogits": logits.grad},
         {"N": N, "V": V, "valid": int((targets != -100).sum())})


def adamw():
    g = torch.Generator().manual_seed(7)
    n, steps = 53, 3
    hp = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weightDecay": 0.1}
    p = torch.nn.Parameter(torch.randn(n, generator=g))
    p0 = p.detach().clone()
    opt = torch.optim.AdamW([p], lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]),
                            eps=hp["eps"], weight_decay=hp["weightDecay"])
    tensors = {"params0": p0}
    for s in range(steps):
        grad = torch.randn(n, generator=g) * (0.1 if s == 1 else 1.0)
        p.grad = grad.clone()
        opt.step()
        st = opt.state[p]
        tensors[f"grad{s}"] = grad
        tensors[f"params{s + 1}"] = p.detach().clone()
        tensors[f"m{s + 1}"] = st["exp_avg"].clone()
        tensors[f"v{s + 1}"] = st["exp_avg_sq"].clone()
    save("adamw", tensors, {"n": n, "steps": steps, **hp})


def mix32(x):
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x


def dropout_mask(n, p, seed):
    """The dropout generator as documented in src/backend/cpu/dropout.ts, written anew."""
    key = mix32((seed % 2**32) ^ 0x9E3779B9)
    thresh = math.floor(p * 2**32)
    keep = torch.tensor(1.0 / (1.0 - p), dtype=torch.float64).float().item()
    vals = [0.0 if mix32(mix32(i ^ key) + key) < thresh else keep for i in range(n)]
    return torch.tensor(vals, dtype=torch.float32)


def dropout():
    n = 1001
    save("dropout", {"mask_a": dropout_mask(n, 0.3, 1234),
                     "mask_b": dropout_mask(n, 0.1, 2**33 + 5)},
         {"n": n, "p_a": 0.3, "seed_a": 1234, "p_b": 0.1, "seed_b": 2**33 + 5})


def rope_at(x, angles, positions, layout):
    """Rotate x(B, T, NH, HS) with token (b, t) at angles[positions[b, t]]."""
    B, T, NH, HS = x.shape
    a = angles[positions.long()].view(B, T, 1, HS // 2)  # (B, T, 1, HS/2)
    if layout == "interleaved":
        xc = torch.view_as_complex(x.reshape(B, T, NH, HS // 2, 2))
        return torch.view_as_real(xc * torch.polar(torch.ones_like(a), a)).flatten(3)
    c, s = torch.cat([a.cos(), a.cos()], -1), torch.cat([a.sin(), a.sin()], -1)
    return x * c + torch.cat([-x[..., HS // 2:], x[..., : HS // 2]], -1) * s


def packed():
    """Packed samples: rope at per-token positions, then block-causal GQA attention."""
    g = torch.Generator().manual_seed(11)
    B, T, NH, NKV, HS, Tmax = 2, 70, 2, 1, 8, 70
    # Segment lengths per row (the last is padding); a segment crosses the 64-row block.
    lens = [[20, 45, 5], [3, 60, 7]]
    segments = torch.zeros(B, T, dtype=torch.int32)
    positions = torch.zeros(B, T, dtype=torch.int32)
    for b, row in enumerate(lens):
        t = 0
        for i, n in enumerate(row):
            segments[b, t:t + n] = i
            positions[b, t:t + n] = torch.arange(n, dtype=torch.int32)
            t += n
    angles = rope_tables(Tmax, HS)
    q = torch.randn(B, T, NH, HS, generator=g).requires_grad_()
    k = torch.randn(B, T, NKV, HS, generator=g).requires_grad_()
    v = torch.randn(B, T, NKV, HS, generator=g).requires_grad_()
    q_rot_interleaved = rope_at(q.detach(), angles, positions, "interleaved")
    qr = rope_at(q, angles, positions, "half")
    kr = rope_at(k, angles, positions, "half")
    qr.retain_grad()
    kr.retain_grad()
    rep = NH // NKV
    qh = qr.transpose(1, 2)  # (B, NH, T, HS)
    kh = kr.transpose(1, 2).repeat_interleave(rep, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(rep, dim=1)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(HS)  # (B, NH, T, T)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    same = segments[:, :, None] == segments[:, None, :]  # (B, T, T)
    mask = causal[None] & same
    scores = scores.masked_fill(~mask[:, None], float("-inf"))
    lse = torch.logsumexp(scores, -1)  # (B, NH, T)
    out = (torch.softmax(scores, -1) @ vh).transpose(1, 2).contiguous()  # (B, T, NH, HS)
    dout = torch.randn(B, T, NH, HS, generator=g)
    out.backward(dout)
    save("packed", {"segments": segments, "positions": positions, "cos": angles.cos(),
                    "sin": angles.sin(), "q": q, "k": k, "v": v,
                    "q_rot_interleaved": q_rot_interleaved, "q_rot": qr, "k_rot": kr,
                    "out": out, "lse": lse, "dout": dout, "dq_rot": qr.grad,
                    "dk_rot": kr.grad, "dv": v.grad, "dq": q.grad, "dk": k.grad},
         {"B": B, "T": T, "NH": NH, "NKV": NKV, "HS": HS, "Tmax": Tmax})


if __name__ == "__main__":
    torch.manual_seed(0)
    if sys.argv[1:] == ["packed"]:  # only the packed-samples fixture
        packed()
        sys.exit(0)
    matmul()
    embedding()
    rmsnorm()
    rope()
    attention("attention", B=2, T=7, NH=4, NKV=2, HS=8, seed=8)
    attention("attention_mqa", B=1, T=6, NH=3, NKV=1, HS=6, seed=9)
    # Longer than the CPU kernel's 64-row query blocks; plain multi-head (NKV = NH).
    attention("attention_long", B=1, T=70, NH=2, NKV=2, HS=4, seed=10)
    swiglu()
    cross_entropy()
    adamw()
    dropout()
    packed()
    print("wrote fixtures to", os.path.normpath(OUT))
