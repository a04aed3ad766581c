"""PyTorch reference for knowledge distillation (recipes/knowledge_distillation_single_device.ts).

Run with Debian's torch: /usr/bin/python3 tests/reference/distill_reference.py
Writes tests/fixtures/ops_distill.safetensors and model_train_kd.safetensors (read by
tests/distill_test.ts).

- The op: torchtune's class loss (cross-entropy) and ForwardKLLoss per token
  (-sum_v softmax(teacher)_v log_softmax(student)_v, masked by the labels), and the gradient
  of ((1 - r) class + r kd) * grad_scale summed over rows, by autograd.
- Training: a tiny LoRA student (model_reference.py's Llama, dropout on, tune's masks) and a
  different, larger full teacher with the same vocabulary; 5 AdamW steps of 2 micro-batches,
  loss = (1 - r) CE + r KD, both means over the step's counted tokens, clip_grad_norm_,
  cosine lr. The teacher runs without gradients.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from fixture_io import write_fixture  # noqa: E402
from model_reference import (  # noqa: E402
    Ctx, OUT, config_a, config_b, cosine_lr, lora_sites, make_batch, meta_of, mix_seed,
    model_forward, random_weights)


def kd_rows(student, teacher, targets):
    """Per-row class loss and KD loss (0 where target = -100)."""
    mask = targets != -100
    ce = F.cross_entropy(student, targets, ignore_index=-100, reduction="none")
    q = F.softmax(teacher, dim=-1, dtype=torch.float32)
    kd = -(q * F.log_softmax(student, dim=-1, dtype=torch.float32)).sum(-1)
    return ce, kd * mask


def op_fixture():
    gen = torch.Generator().manual_seed(21)
    N, V, r, scale = 9, 37, 0.3, 0.125
    student = (3 * torch.randn(N, V, generator=gen)).requires_grad_()
    teacher = 3 * torch.randn(N, V, generator=gen)
    targets = torch.randint(0, V, (N,), generator=gen)
    targets[2] = targets[6] = -100
    ce, kd = kd_rows(student, teacher, targets)
    (((1 - r) * ce.sum() + r * kd.sum()) * scale).backward()
    write_fixture(os.path.join(OUT, "ops_distill.safetensors"), {
        "logits": student, "teacher": teacher, "targets": targets, "losses": ce, "kd_losses": kd,
        "dlogits": student.grad}, {"N": N, "V": V, "kd_ratio": r, "grad_scale": scale})
    print("ops_distill: written")


def teacher_config():
    """A wider, deeper teacher with the student's vocabulary."""
    cfg = dict(config_b())
    cfg.update(dim=40, n_layers=2, n_heads=4, n_kv_heads=2, hidden=80)
    return cfg


def train_fixture(name, seed, lora, r):
    cfg, tcfg = config_a(), teacher_config()
    gen = torch.Generator().manual_seed(seed)
    B, T, steps, micro = 2, 7, 5, 2
    base = random_weights(cfg, gen)
    teacher = random_weights(tcfg, gen)
    init = {}
    for prefix, din, dout in lora_sites(cfg, lora):
        bound = 1 / math.sqrt(din)
        init[prefix + ".lora_a.weight"] = (torch.rand((lora["rank"], din), generator=gen) * 2 - 1) * bound
        init[prefix + ".lora_b.weight"] = torch.zeros((dout, lora["rank"]))
    train = {k: v.clone().requires_grad_() for k, v in init.items()}
    params = dict(base)
    params.update(train)
    hp = dict(lr=0.02, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.05, max_norm=0.5, warmup=2,
              kd_ratio=r)
    opt = torch.optim.AdamW(list(train.values()), lr=hp["lr"], betas=hp["betas"], eps=hp["eps"],
                            weight_decay=hp["weight_decay"])
    batches = [make_batch(cfg, gen, B, T, ignore=3) for _ in range(steps * micro)]
    losses, class_losses, kd_losses, norms = [], [], [], []
    micro_step = 0
    for step in range(steps):
        lr = cosine_lr(hp["lr"], step, hp["warmup"], steps)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        ntok = sum(int((batches[step * micro + j][1] != -100).sum()) for j in range(micro))
        ce_sum, kd_sum = 0.0, 0.0
        for j in range(micro):
            tokens, targets = batches[step * micro + j]
            micro_step += 1
            with torch.no_grad():
                tl = model_forward(Ctx(tcfg), teacher, tokens).view(B * T, -1)
            seed_ms = mix_seed(lora["seed"], micro_step)
            sl = model_forward(Ctx(cfg, lora, seed_ms), params, tokens).view(B * T, -1)
            ce, kd = kd_rows(sl, tl, targets.view(-1))
            (((1 - r) * ce.sum() + r * kd.sum()) / ntok).backward()
            ce_sum += ce.sum().item()
            kd_sum += kd.sum().item()
        norm = torch.nn.utils.clip_grad_norm_(list(train.values()), hp["max_norm"])
        opt.step()
        class_losses.append(ce_sum / ntok)
        kd_losses.append(kd_sum / ntok)
        losses.append((1 - r) * ce_sum / ntok + r * kd_sum / ntok)
        norms.append(norm.item())
    out = {}
    for k, v in base.items():
        out["w." + k] = v
    for k, v in teacher.items():
        out["teacher." + k] = v
    for k, v in init.items():
        out["init." + k] = v
    for k, v in train.items():
        out["final." + k] = v
    out["tokens"] = torch.stack([b[0] for b in batches])
    out["targets"] = torch.stack([b[1] for b in batches])
    meta = {"config": meta_of(cfg), "teacher_config": meta_of(tcfg), "B": B, "T": T,
            "steps": steps, "micro": micro, "hp": hp, "lora": lora, "losses": losses,
            "class_losses": class_losses, "kd_losses": kd_losses, "grad_norms": norms}
    write_fixture(os.path.join(OUT, f"{name}.safetensors"), out, meta)
    print(f"{name}: losses {[round(x, 6) for x in losses]}")


if __name__ == "__main__":
    op_fixture()
    train_fixture("model_train_kd", 8,
                  lora={"rank": 4, "alpha": 8.0, "dropout": 0.1, "seed": 42,
                        "attn": ["q_proj", "v_proj"], "mlp": True, "output": True},
                  r=0.5)
