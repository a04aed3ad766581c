"""PyTorch reference for tune's Llama model, modules, LoRA and AdamW training.

Run with Debian's torch: /usr/bin/python3 tests/reference/model_reference.py
Writes tests/fixtures/model_*.safetensors (read by tests/model_*_test.ts).

The model follows torchtune's Llama (pre-norm RMSNorm, rotary embeddings, GQA attention,
SwiGLU MLP, tied or untied output, optional q/k/v bias as in Qwen2) written out here in
plain torch with autograd, so every gradient the TypeScript backward produces by hand can
be compared. LoRA dropout masks use the counter-based generator documented in
src/backend/cpu/dropout.ts and the seed mixing of src/params/random.ts, so the masks match
tune's bit for bit.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from fixture_io import write_fixture  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures")
M32 = 0xFFFFFFFF

# ---------------------------------------------------------------- seeds and dropout masks


def mix_seed(*parts):
    """src/params/random.ts mixSeed."""
    h = 0x811C9DC5
    for p in parts:
        h = ((h ^ (p & M32)) * 0x01000193) & M32
        h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & M32
        h = (h ^ (h >> 12)) & M32
    return h


def mix32(x):
    x = (x ^ (x >> 16)) & M32
    x = (x * 0x7FEB352D) & M32
    x = (x ^ (x >> 15)) & M32
    x = (x * 0x846CA68B) & M32
    return (x ^ (x >> 16)) & M32


def dropout_mask(n, p, seed):
    """src/backend/cpu/dropout.ts dropoutFill (vectorised with int64 arithmetic)."""
    def mix(x):
        x = (x ^ (x >> 16)) & M32
        x = (x * 0x7FEB352D) & M32
        x = (x ^ (x >> 15)) & M32
        x = (x * 0x846CA68B) & M32
        return (x ^ (x >> 16)) & M32

    key = mix32(((seed % (1 << 32)) ^ 0x9E3779B9) & M32)
    i = torch.arange(n, dtype=torch.int64)
    r = mix((mix(i ^ key) + key) & M32)
    thresh = math.floor(p * 4294967296)
    keep = torch.tensor(1.0 / (1.0 - p), dtype=torch.float32)
    return torch.where(r < thresh, torch.zeros((), dtype=torch.float32), keep)


# ---------------------------------------------------------------- rope


def rope_freqs(hs, base, scaling):
    f = 1.0 / (base ** (torch.arange(0, hs, 2)[: hs // 2].float() / hs))
    if scaling is None:
        return f
    factor, low, high, old = scaling
    lw, hw = old / low, old / high
    out = []
    for freq in f:
        wl = 2 * math.pi / freq
        if wl < hw:
            out.append(freq)
        elif wl > lw:
            out.append(freq / factor)
        else:
            smooth = (old / wl - low) / (high - low)
            out.append((1 - smooth) * freq / factor + smooth * freq)
    return torch.stack(out).to(f.dtype)


def rope_tables(hs, tmax, base, scaling):
    f = rope_freqs(hs, base, scaling)
    ang = torch.outer(torch.arange(tmax).float(), f)
    return torch.cos(ang), torch.sin(ang)  # (Tmax, HS/2)


def apply_rope(x, cos, sin, layout, pos=0):
    """x (B, T, H, HS)."""
    T = x.shape[1]
    c = cos[pos:pos + T].view(1, T, 1, -1)
    s = sin[pos:pos + T].view(1, T, 1, -1)
    if layout == "interleaved":
        xs = x.reshape(*x.shape[:-1], -1, 2)
        x0, x1 = xs[..., 0], xs[..., 1]
        return torch.stack([x0 * c - x1 * s, x1 * c + x0 * s], -1).flatten(-2)
    half = x.shape[-1] // 2
    x0, x1 = x[..., :half], x[..., half:]
    return torch.cat([x0 * c - x1 * s, x1 * c + x0 * s], -1)


# ---------------------------------------------------------------- model


def rms_norm(x, scale, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * scale


class Ctx:
    """Per-forward settings: LoRA config, dropout seed (None = eval), adapters."""

    def __init__(self, cfg, lora=None, seed=None):
        self.cfg, self.lora, self.seed = cfg, lora, seed


LAYER_KEYS = ["q_proj", "k_proj", "v_proj", "output_proj", "w1", "w2", "w3"]


def linear(ctx, P, prefix, x, seed_index, layer_seed):
    y = x @ P[prefix + ".weight"].t()
    if prefix + ".bias" in P:
        y = y + P[prefix + ".bias"]
    a = P.get(prefix + ".lora_a.weight")
    if a is not None:
        lora = ctx.lora
        xd = x
        if layer_seed is not None and lora["dropout"] > 0:
            s = layer_seed if seed_index is None else mix_seed(layer_seed, seed_index)
            xd = x * dropout_mask(x.numel(), lora["dropout"], s).view(x.shape)
        y = y + (lora["alpha"] / lora["rank"]) * (xd @ a.t()) @ P[prefix + ".lora_b.weight"].t()
    return y


def layer_forward(ctx, P, i, x, cos, sin, B, T):
    cfg = ctx.cfg
    C, NH, NKV = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"]
    HS = C // NH
    p = f"layers.{i}"
    ls = None if ctx.seed is None else mix_seed(ctx.seed, i)
    lin = lambda name, inp, k: linear(ctx, P, f"{p}.{name}", inp, k, ls)  # noqa: E731
    h = rms_norm(x, P[f"{p}.sa_norm.scale"], cfg["norm_eps"])
    q = lin("attn.q_proj", h, 0).view(B, T, NH, HS)
    k = lin("attn.k_proj", h, 1).view(B, T, NKV, HS)
    v = lin("attn.v_proj", h, 2).view(B, T, NKV, HS)
    q = apply_rope(q, cos, sin, cfg["rope_layout"])
    k = apply_rope(k, cos, sin, cfg["rope_layout"])
    att = attention(q, k, v).reshape(B * T, NH * HS)
    h1 = x + lin("attn.output_proj", att, 3)
    h2 = rms_norm(h1, P[f"{p}.mlp_norm.scale"], cfg["norm_eps"])
    g = lin("mlp.w1", h2, 4)
    u = lin("mlp.w3", h2, 6)
    return h1 + lin("mlp.w2", F.silu(g) * u, 5)


def attention(q, k, v):
    """q (B, T, NH, HS), k/v (B, T, NKV, HS), causal, GQA."""
    B, T, NH, HS = q.shape
    rep = NH // k.shape[2]
    q = q.transpose(1, 2)
    k = k.transpose(1, 2).repeat_interleave(rep, dim=1)
    v = v.transpose(1, 2).repeat_interleave(rep, dim=1)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(HS)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    s = s.masked_fill(~mask, float("-inf"))
    return (torch.softmax(s, -1) @ v).transpose(1, 2)  # (B, T, NH, HS)


def model_forward(ctx, P, tokens):
    cfg = ctx.cfg
    B, T = tokens.shape
    HS = cfg["dim"] // cfg["n_heads"]
    cos, sin = rope_tables(HS, T, cfg["rope_theta"], cfg["rope_scaling"])
    x = P["tok_embeddings.weight"][tokens.view(-1)]
    for i in range(cfg["n_layers"]):
        x = layer_forward(ctx, P, i, x, cos, sin, B, T)
    x = rms_norm(x, P["norm.scale"], cfg["norm_eps"])
    head = dict(P)
    if cfg["tied"]:
        head["output.weight"] = P["tok_embeddings.weight"]
    hs = None if ctx.seed is None else mix_seed(ctx.seed, cfg["n_layers"], 0x4EAD)
    return linear(ctx, head, "output", x, None, hs).view(B, T, -1)


# ---------------------------------------------------------------- configs and weights


def config_a():
    """Interleaved rope with Llama 3.1 scaling, untied output, GQA, no bias."""
    return dict(vocab=61, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden=48,
                norm_eps=1e-5, rope_theta=10000.0, rope_scaling=(8.0, 1.0, 4.0, 8),
                rope_layout="interleaved", tied=False, qkv_bias=False)


def config_b():
    """Rotate-half rope, tied output, GQA, q/k/v bias (Qwen2-like), large theta."""
    return dict(vocab=61, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden=48,
                norm_eps=1e-6, rope_theta=500000.0, rope_scaling=None,
                rope_layout="half", tied=True, qkv_bias=True)


def shapes(cfg):
    C, V, H = cfg["dim"], cfg["vocab"], cfg["hidden"]
    HS = C // cfg["n_heads"]
    Q, KV = cfg["n_heads"] * HS, cfg["n_kv_heads"] * HS
    s = {"tok_embeddings.weight": (V, C)}
    for i in range(cfg["n_layers"]):
        p = f"layers.{i}"
        s[f"{p}.sa_norm.scale"] = (C,)
        s[f"{p}.attn.q_proj.weight"] = (Q, C)
        s[f"{p}.attn.k_proj.weight"] = (KV, C)
        s[f"{p}.attn.v_proj.weight"] = (KV, C)
        if cfg["qkv_bias"]:
            s[f"{p}.attn.q_proj.bias"] = (Q,)
            s[f"{p}.attn.k_proj.bias"] = (KV,)
            s[f"{p}.attn.v_proj.bias"] = (KV,)
        s[f"{p}.attn.output_proj.weight"] = (C, Q)
        s[f"{p}.mlp_norm.scale"] = (C,)
        s[f"{p}.mlp.w1.weight"] = (H, C)
        s[f"{p}.mlp.w2.weight"] = (C, H)
        s[f"{p}.mlp.w3.weight"] = (H, C)
    s["norm.scale"] = (C,)
    if not cfg["tied"]:
        s["output.weight"] = (V, C)
    return s


def random_weights(cfg, gen):
    P = {}
    for name, shp in shapes(cfg).items():
        if name.endswith(".scale"):
            P[name] = 1.0 + 0.1 * torch.randn(shp, generator=gen)
        elif name.endswith(".bias"):
            P[name] = 0.1 * torch.randn(shp, generator=gen)
        elif name == "tok_embeddings.weight":
            P[name] = 0.5 * torch.randn(shp, generator=gen)
        else:
            P[name] = torch.randn(shp, generator=gen) / math.sqrt(shp[1])
    return P


def lora_sites(cfg, lora):
    C, V, H = cfg["dim"], cfg["vocab"], cfg["hidden"]
    HS = C // cfg["n_heads"]
    Q, KV = cfg["n_heads"] * HS, cfg["n_kv_heads"] * HS
    dims = {"q_proj": (C, Q), "k_proj": (C, KV), "v_proj": (C, KV), "output_proj": (Q, C),
            "w1": (C, H), "w2": (H, C), "w3": (C, H)}
    sites = []
    for i in range(cfg["n_layers"]):
        for key in LAYER_KEYS:
            mlp = key in ("w1", "w2", "w3")
            if (lora["mlp"] if mlp else key in lora["attn"]):
                sites.append((f"layers.{i}.{'mlp' if mlp else 'attn'}.{key}",) + dims[key])
    if lora["output"]:
        sites.append(("output", C, V))
    return sites


def make_batch(cfg, gen, B, T, ignore=2):
    tokens = torch.randint(0, cfg["vocab"], (B, T), generator=gen)
    targets = torch.randint(0, cfg["vocab"], (B, T), generator=gen)
    flat = targets.view(-1)
    idx = torch.randperm(B * T, generator=gen)[:ignore]
    flat[idx] = -100
    return tokens, targets


def meta_of(cfg):
    m = dict(cfg)
    m["rope_scaling"] = list(cfg["rope_scaling"]) if cfg["rope_scaling"] else None
    return m


# ---------------------------------------------------------------- fixtures


def one_step_fixture(name, cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    B, T = 2, 7
    P = {k: v.requires_grad_() for k, v in random_weights(cfg, gen).items()}
    tokens, targets = make_batch(cfg, gen, B, T)
    logits = model_forward(Ctx(cfg), P, tokens)
    loss = F.cross_entropy(logits.view(-1, cfg["vocab"]), targets.view(-1), ignore_index=-100)
    loss.backward()
    out = {"tokens": tokens, "targets": targets, "logits": logits, "loss": loss.view(1)}
    for k, v in P.items():
        out["w." + k] = v
        out["g." + k] = v.grad
    write_fixture(os.path.join(OUT, f"{name}.safetensors"), out,
                  {"config": meta_of(cfg), "B": B, "T": T})
    print(f"{name}: loss {loss.item():.6f}")


def cosine_lr(base, step, warmup, total, cycles=0.5):
    """torchtune get_cosine_schedule_with_warmup lambda, times the base lr."""
    if step < warmup:
        return base * step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return base * max(0.0, 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress)))


def train_fixture(name, cfg, seed, lora=None):
    """10 AdamW steps of 2 micro-batches each, clip_grad_norm_, cosine schedule with warmup."""
    gen = torch.Generator().manual_seed(seed)
    B, T, steps, micro = 2, 7, 10, 2
    base = random_weights(cfg, gen)
    P = dict(base)
    if lora:
        init = {}
        for prefix, din, dout in lora_sites(cfg, lora):
            bound = 1 / math.sqrt(din)
            init[prefix + ".lora_a.weight"] = (torch.rand((lora["rank"], din), generator=gen) * 2 - 1) * bound
            init[prefix + ".lora_b.weight"] = torch.zeros((dout, lora["rank"]))
        train = {k: v.clone().requires_grad_() for k, v in init.items()}
        P.update(train)
    else:
        train = {k: v.clone().requires_grad_() for k, v in base.items()}
        P = dict(train)
    hp = dict(lr=0.02, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.05, max_norm=0.5, warmup=3)
    opt = torch.optim.AdamW(list(train.values()), lr=hp["lr"], betas=hp["betas"], eps=hp["eps"],
                            weight_decay=hp["weight_decay"])
    batches = [make_batch(cfg, gen, B, T) for _ in range(steps * micro)]
    losses, norms, lrs = [], [], []
    micro_step = 0
    for step in range(steps):
        lr = cosine_lr(hp["lr"], step, hp["warmup"], steps)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        ntok = sum(int((batches[step * micro + j][1] != -100).sum()) for j in range(micro))
        total = 0.0
        for j in range(micro):
            tokens, targets = batches[step * micro + j]
            micro_step += 1
            seed_ms = mix_seed(lora["seed"], micro_step) if lora and lora["dropout"] > 0 else None
            logits = model_forward(Ctx(cfg, lora, seed_ms), P, tokens)
            loss_sum = F.cross_entropy(logits.view(-1, cfg["vocab"]), targets.view(-1),
                                       ignore_index=-100, reduction="sum")
            (loss_sum / ntok).backward()
            total += loss_sum.item()
        norm = torch.nn.utils.clip_grad_norm_(list(train.values()), hp["max_norm"])
        opt.step()
        losses.append(total / ntok)
        norms.append(norm.item())
        lrs.append(lr)
    out = {}
    for k, v in base.items():
        out["w." + k] = v
    if lora:
        for k, v in init.items():
            out["init." + k] = v
    for k, v in train.items():
        out["final." + k] = v
    if lora:
        # merged weights of the trained adapters: W + (alpha / r) B A
        for prefix, _din, _dout in lora_sites(cfg, lora):
            wname = prefix + ".weight"
            w = base[wname] if wname in base else base["tok_embeddings.weight"]
            out["merged." + wname] = w + (lora["alpha"] / lora["rank"]) * (
                train[prefix + ".lora_b.weight"] @ train[prefix + ".lora_a.weight"])
    out["tokens"] = torch.stack([b[0] for b in batches])
    out["targets"] = torch.stack([b[1] for b in batches])
    out["losses"] = torch.tensor(losses, dtype=torch.float64)
    out["grad_norms"] = torch.tensor(norms, dtype=torch.float64)
    out["lrs"] = torch.tensor(lrs, dtype=torch.float64)
    meta = {"config": meta_of(cfg), "B": B, "T": T, "steps": steps, "micro": micro, "hp": hp,
            "lora": lora}
    write_fixture(os.path.join(OUT, f"{name}.safetensors"), out, meta)
    print(f"{name}: losses {[round(x, 5) for x in losses]}")
    print(f"{name}: grad norms {[round(x, 4) for x in norms]}")


def modules_fixture():
    """Rope tables (with Llama 3.1 scaling) and the dropout mask generator."""
    gen = torch.Generator().manual_seed(7)
    out = {}
    cos, sin = rope_tables(16, 40, 10000.0, (8.0, 1.0, 4.0, 16))
    out["rope_scaled.cos"], out["rope_scaled.sin"] = cos, sin
    cos, sin = rope_tables(8, 40, 500000.0, None)
    out["rope_plain.cos"], out["rope_plain.sin"] = cos, sin
    out["mask"] = dropout_mask(300, 0.25, mix_seed(3, 4, 5))
    # one LoRA linear with dropout, forward and gradients
    N, din, dout, r = 6, 10, 12, 4
    x = torch.randn(N, din, generator=gen).requires_grad_()
    w = torch.randn(dout, din, generator=gen).requires_grad_()
    bias = torch.randn(dout, generator=gen).requires_grad_()
    a = torch.randn(r, din, generator=gen).requires_grad_()
    b = torch.randn(dout, r, generator=gen).requires_grad_()
    lora = {"rank": r, "alpha": 8.0, "dropout": 0.3}
    P = {"lin.weight": w, "lin.bias": bias, "lin.lora_a.weight": a, "lin.lora_b.weight": b}
    y = linear(Ctx(None, lora), P, "lin", x, 2, 1234)
    dy = torch.randn(N, dout, generator=gen)
    y.backward(dy)
    for k, v in {"x": x, "w": w, "bias": bias, "a": a, "b": b}.items():
        out["lora." + k] = v
        out["lora.d" + k] = v.grad
    out["lora.y"], out["lora.dy"] = y, dy
    # rms norm
    x = torch.randn(6, 8, generator=gen).requires_grad_()
    sc = (1 + 0.2 * torch.randn(8, generator=gen)).requires_grad_()
    y = rms_norm(x, sc, 1e-5)
    dy = torch.randn(6, 8, generator=gen)
    y.backward(dy)
    out.update({"norm.x": x, "norm.scale": sc, "norm.y": y, "norm.dy": dy, "norm.dx": x.grad,
                "norm.dscale": sc.grad})
    # attention block: GQA, q/k/v bias, rotate-half rope
    B, T, C, NH, NKV = 2, 5, 16, 4, 2
    HS = C // NH
    x = torch.randn(B * T, C, generator=gen).requires_grad_()
    W = {"wq": (NH * HS, C), "wk": (NKV * HS, C), "wv": (NKV * HS, C), "wo": (C, NH * HS)}
    W = {k: (torch.randn(v, generator=gen) / math.sqrt(v[1])).requires_grad_() for k, v in W.items()}
    Bs = {"bq": NH * HS, "bk": NKV * HS, "bv": NKV * HS}
    Bs = {k: (0.1 * torch.randn(v, generator=gen)).requires_grad_() for k, v in Bs.items()}
    cos, sin = rope_tables(HS, T, 10000.0, None)
    q = apply_rope((x @ W["wq"].t() + Bs["bq"]).view(B, T, NH, HS), cos, sin, "half")
    k = apply_rope((x @ W["wk"].t() + Bs["bk"]).view(B, T, NKV, HS), cos, sin, "half")
    v = (x @ W["wv"].t() + Bs["bv"]).view(B, T, NKV, HS)
    y = attention(q, k, v).reshape(B * T, NH * HS) @ W["wo"].t()
    dy = torch.randn(B * T, C, generator=gen)
    y.backward(dy)
    out.update({"attn.x": x, "attn.y": y, "attn.dy": dy, "attn.dx": x.grad})
    for kk, vv in list(W.items()) + list(Bs.items()):
        out["attn." + kk] = vv
        out["attn.d" + kk] = vv.grad
    # feed-forward
    x = torch.randn(6, 8, generator=gen).requires_grad_()
    W = {"w1": (12, 8), "w2": (8, 12), "w3": (12, 8)}
    W = {k: (torch.randn(v, generator=gen) / math.sqrt(v[1])).requires_grad_() for k, v in W.items()}
    y = (F.silu(x @ W["w1"].t()) * (x @ W["w3"].t())) @ W["w2"].t()
    dy = torch.randn(6, 8, generator=gen)
    y.backward(dy)
    out.update({"ffn.x": x, "ffn.y": y, "ffn.dy": dy, "ffn.dx": x.grad})
    for kk, vv in W.items():
        out["ffn." + kk] = vv
        out["ffn.d" + kk] = vv.grad
    write_fixture(os.path.join(OUT, "model_modules.safetensors"), out,
                  {"lora": {"N": N, "in": din, "out": dout, "rank": r, "alpha": 8.0,
                            "dropout": 0.3, "layer_seed": 1234, "seed_index": 2},
                   "mask_seed": [3, 4, 5]})
    print("model_modules written")


def llama2c_v2_fixture():
    """A tiny llama2.c version 2 (Q8_0) file written per llama2.c export.py's version2_export
    layout, plus the dequantized weights it must read back as."""
    import struct
    gen = torch.Generator().manual_seed(11)
    dim, hidden, layers, heads, kv, vocab, seq, gs = 8, 16, 1, 2, 1, 16, 8, 8
    hs = dim // heads
    P = {"tok_embeddings.weight": torch.randn(vocab, dim, generator=gen)}
    mats = [("attn.q_proj", heads * hs, dim), ("attn.k_proj", kv * hs, dim),
            ("attn.v_proj", kv * hs, dim), ("attn.output_proj", dim, heads * hs),
            ("mlp.w1", hidden, dim), ("mlp.w2", dim, hidden), ("mlp.w3", hidden, dim)]
    for name, r, c in mats:
        P[f"layers.0.{name}.weight"] = torch.randn(r, c, generator=gen)
    P["layers.0.sa_norm.scale"] = torch.rand(dim, generator=gen) + 0.5
    P["layers.0.mlp_norm.scale"] = torch.rand(dim, generator=gen) + 0.5
    P["norm.scale"] = torch.rand(dim, generator=gen) + 0.5
    P["output.weight"] = torch.randn(vocab, dim, generator=gen)
    head = struct.pack("I", 0x616B3432) + struct.pack("i", 2)
    head += struct.pack("iiiiiii", dim, hidden, layers, heads, kv, vocab, seq)
    head += struct.pack("B", 0) + struct.pack("i", gs)
    body = head + b"\0" * (256 - len(head))
    for n in ["layers.0.sa_norm.scale", "layers.0.mlp_norm.scale", "norm.scale"]:
        body += P[n].numpy().astype("<f4").tobytes()
    order = ["tok_embeddings.weight"] + [f"layers.0.{m[0]}.weight" for m in mats] + ["output.weight"]
    expected = {}
    for n in order:
        w = P[n].reshape(-1, gs)
        scale = w.abs().max(dim=1).values / 127.0
        q = torch.round(w / scale[:, None]).to(torch.int8)
        body += q.numpy().tobytes() + scale.numpy().astype("<f4").tobytes()
        expected[n] = (q.float() * scale[:, None]).reshape(P[n].shape)
    for n in ["layers.0.sa_norm.scale", "layers.0.mlp_norm.scale", "norm.scale"]:
        expected[n] = P[n]
    with open(os.path.join(OUT, "model_llama2c_v2.bin"), "wb") as f:
        f.write(body)
    write_fixture(os.path.join(OUT, "model_llama2c_v2.safetensors"), expected)
    print(f"model_llama2c_v2.bin: {len(body)} bytes")


if __name__ == "__main__":
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    modules_fixture()
    llama2c_v2_fixture()
    one_step_fixture("model_tiny_a", config_a(), 1)
    one_step_fixture("model_tiny_b", config_b(), 2)
    train_fixture("model_train_full", config_a(), 3)
    train_fixture("model_train_lora", config_a(), 4,
                  lora={"rank": 4, "alpha": 8.0, "dropout": 0.1, "seed": 42,
                        "attn": ["q_proj", "k_proj", "v_proj", "output_proj"], "mlp": True,
                        "output": True})
