"""PyTorch reference for DoRA (weight-decomposed LoRA), written as torchtune's DoRALinear.

Run with Debian's torch: /usr/bin/python3 tests/reference/dora_reference.py
Writes tests/fixtures/model_train_dora.safetensors (read by tests/model_dora_test.ts).

The tiny Llama and its training loop are model_reference.py's (train_fixture); only the
adapted linear layers differ. As torchtune's DoRALinear.forward:
    base_out = x @ W^T;  lora_out = B(A(dropout(x)))
    weight_norm = ||W + s * (B A)||_row, detached (B A through lora_b(lora_a(eye)).T)
    mag_norm_scale = magnitude / weight_norm
    out = base_out + (mag_norm_scale - 1) * base_out + mag_norm_scale * lora_out * s
The magnitude starts at ||W + s * B A||_row (initialize_dora_magnitude; B = 0 gives ||W||).
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import model_reference as mr  # noqa: E402
from fixture_io import write_fixture  # noqa: E402


def dora_linear(ctx, P, prefix, x, seed_index, layer_seed):
    """model_reference.linear with torchtune's DoRALinear in place of LoRALinear."""
    w = P[prefix + ".weight"]
    base_out = x @ w.t()
    assert prefix + ".bias" not in P, "DoRALinear has no bias"
    a = P.get(prefix + ".lora_a.weight")
    if a is None:
        return base_out
    lora = ctx.lora
    xd = x
    if layer_seed is not None and lora["dropout"] > 0:
        s = layer_seed if seed_index is None else mr.mix_seed(layer_seed, seed_index)
        xd = x * mr.dropout_mask(x.numel(), lora["dropout"], s).view(x.shape)
    b = P[prefix + ".lora_b.weight"]
    scaling = lora["alpha"] / lora["rank"]
    lora_out = (xd @ a.t()) @ b.t()
    x_eye = torch.eye(a.shape[1], dtype=x.dtype)
    lora_weight = ((x_eye @ a.t()) @ b.t()).t()
    weight_norm = torch.linalg.norm(w + scaling * lora_weight.detach(), dim=1).detach()
    mag_norm_scale = (P[prefix + ".magnitude"] / weight_norm).view(1, -1)
    dora_out = (mag_norm_scale - 1) * base_out + mag_norm_scale * lora_out * scaling
    return dora_out + base_out


mr.linear = dora_linear  # model_reference's layers look `linear` up at call time


def train_dora_fixture(name, cfg, seed, lora):
    """model_reference.train_fixture for DoRA adapters: 10 AdamW steps of 2 micro-batches."""
    gen = torch.Generator().manual_seed(seed)
    B, T, steps, micro = 2, 7, 10, 2
    base = mr.random_weights(cfg, gen)
    P = dict(base)
    init = {}
    s = lora["alpha"] / lora["rank"]
    for prefix, din, dout in mr.lora_sites(cfg, lora):
        bound = 1 / math.sqrt(din)
        init[prefix + ".lora_a.weight"] = (torch.rand((lora["rank"], din), generator=gen) * 2 - 1) * bound
        init[prefix + ".lora_b.weight"] = torch.zeros((dout, lora["rank"]))
    for prefix, _din, _dout in mr.lora_sites(cfg, lora):
        w = base[prefix + ".weight"]
        ba = init[prefix + ".lora_b.weight"] @ init[prefix + ".lora_a.weight"]
        init[prefix + ".magnitude"] = torch.linalg.norm(w + s * ba, dim=1)
    train = {k: v.clone().requires_grad_() for k, v in init.items()}
    P.update(train)
    hp = dict(lr=0.02, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.05, max_norm=0.5, warmup=3)
    opt = torch.optim.AdamW(list(train.values()), lr=hp["lr"], betas=hp["betas"], eps=hp["eps"],
                            weight_decay=hp["weight_decay"])
    batches = [mr.make_batch(cfg, gen, B, T) for _ in range(steps * micro)]
    losses, norms, lrs = [], [], []
    micro_step = 0
    for step in range(steps):
        lr = mr.cosine_lr(hp["lr"], step, hp["warmup"], steps)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        ntok = sum(int((batches[step * micro + j][1] != -100).sum()) for j in range(micro))
        total = 0.0
        for j in range(micro):
            tokens, targets = batches[step * micro + j]
            micro_step += 1
            seed_ms = mr.mix_seed(lora["seed"], micro_step) if lora["dropout"] > 0 else None
            logits = mr.model_forward(mr.Ctx(cfg, lora, seed_ms), P, tokens)
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
    for k, v in init.items():
        out["init." + k] = v
    for k, v in train.items():
        out["final." + k] = v
    with torch.no_grad():
        # merged: (magnitude / ||W + s B A||)[:, None] * (W + s B A)
        for prefix, _din, _dout in mr.lora_sites(cfg, lora):
            wname = prefix + ".weight"
            adapted = base[wname] + s * (train[prefix + ".lora_b.weight"] @ train[prefix + ".lora_a.weight"])
            norm = torch.linalg.norm(adapted, dim=1)
            out["merged." + wname] = (train[prefix + ".magnitude"] / norm).view(-1, 1) * adapted
        # eval-mode logits of the trained model on the first batch (no dropout)
        out["eval_logits"] = mr.model_forward(mr.Ctx(cfg, lora, None), P, batches[0][0])
    out["tokens"] = torch.stack([b[0] for b in batches])
    out["targets"] = torch.stack([b[1] for b in batches])
    out["losses"] = torch.tensor(losses, dtype=torch.float64)
    out["grad_norms"] = torch.tensor(norms, dtype=torch.float64)
    out["lrs"] = torch.tensor(lrs, dtype=torch.float64)
    meta = {"config": mr.meta_of(cfg), "B": B, "T": T, "steps": steps, "micro": micro, "hp": hp,
            "lora": lora}
    write_fixture(os.path.join(mr.OUT, f"{name}.safetensors"), out, meta)
    print(f"{name}: losses {[round(x, 5) for x in losses]}")
    print(f"{name}: grad norms {[round(x, 4) for x in norms]}")


if __name__ == "__main__":
    torch.manual_seed(0)
    os.makedirs(mr.OUT, exist_ok=True)
    train_dora_fixture("model_train_dora", mr.config_a(), 5,
                       lora={"rank": 4, "alpha": 8.0, "dropout": 0.1, "seed": 42,
                             "attn": ["q_proj", "k_proj", "v_proj", "output_proj"], "mlp": True,
                             "output": True, "use_dora": True})
