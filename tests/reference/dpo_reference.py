"""PyTorch reference for tune's preference training (recipes/lora_dpo_single_device.ts).

Run with Debian's torch: /usr/bin/python3 tests/reference/dpo_reference.py
Writes tests/fixtures/rlhf_preference_loss.safetensors, model_train_dpo.safetensors and
model_step_simpo_rso.safetensors
(read by tests/rlhf_dpo_test.ts).

- Preference losses: torchtune's DPOLoss (with and without label smoothing), RSOLoss and
  SimPOLoss written out in torch float64, their gradients by autograd. The cases go in the
  metadata as JSON (full double precision).
- DPO training: the tiny LoRA Llama of model_reference.py (dropout on, tune's masks), the
  reference model = the same weights without adapters (torchtune's disable_adapter), log p
  of a sequence = -sum of its token cross-entropies (torchtune's get_batch_log_probs with
  already-shifted labels), a batch = P chosen rows then P rejected rows, 6 AdamW steps of 2
  micro-batches with loss.mean() / micro as torchtune's recipe, clip_grad_norm_, cosine lr.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from fixture_io import write_fixture  # noqa: E402
from model_reference import (  # noqa: E402
    Ctx, OUT, config_a, cosine_lr, lora_sites, make_batch, meta_of, mix_seed, model_forward,
    random_weights)


def dpo(pc, pr, rc, rr, beta, ls):
    logits = (pc - pr) - (rc - rr)
    losses = -F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls
    return losses, beta * (pc - rc).detach(), beta * (pr - rr).detach()


def rso(pc, pr, rc, rr, gamma):
    logits = (pc - pr) - (rc - rr)
    return torch.relu(1 - gamma * logits), gamma * (pc - rc).detach(), gamma * (pr - rr).detach()


def simpo(pc, pr, beta, gamma, ls):
    logits = (pc - pr) - gamma / beta
    losses = -F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls
    return losses, beta * pc.detach(), beta * pr.detach()


def loss_cases():
    gen = torch.Generator().manual_seed(11)
    P = 8
    pc0 = -20 * torch.rand(P, generator=gen, dtype=torch.float64)
    pr0 = -20 * torch.rand(P, generator=gen, dtype=torch.float64)
    rc = pc0 + torch.randn(P, generator=gen, dtype=torch.float64)
    rr = pr0 + torch.randn(P, generator=gen, dtype=torch.float64)
    # a pair far on each side of the sigmoid, and (RSO) one exactly at the hinge's kink
    pc0[0], pr0[0], rc[0], rr[0] = -1.0, -400.0, -200.0, -200.0
    pc0[1], pr0[1], rc[1], rr[1] = -400.0, -1.0, -200.0, -200.0
    specs = [
        ("dpo", {"beta": 0.1, "label_smoothing": 0.0}, lambda a, b: dpo(a, b, rc, rr, 0.1, 0.0)),
        ("dpo", {"beta": 0.5, "label_smoothing": 0.1}, lambda a, b: dpo(a, b, rc, rr, 0.5, 0.1)),
        ("rso", {"gamma": 0.1}, lambda a, b: rso(a, b, rc, rr, 0.1)),
        ("simpo", {"beta": 2.0, "gamma": 0.5, "label_smoothing": 0.0},
         lambda a, b: simpo(a, b, 2.0, 0.5, 0.0)),
    ]
    cases = []
    for kind, hp, fn in specs:
        pc = pc0.clone().requires_grad_()
        pr = pr0.clone().requires_grad_()
        if kind == "rso":
            # put pair 2 exactly on the hinge: 1 - gamma * logits == 0
            with torch.no_grad():
                pc[2] = pr[2] + (rc[2] - rr[2]) + 10.0
        losses, cr, rj = fn(pc, pr)
        losses.sum().backward()
        cases.append({
            "kind": kind, "hp": hp,
            "policy_chosen": pc.detach().tolist(), "policy_rejected": pr.detach().tolist(),
            "reference_chosen": rc.tolist(), "reference_rejected": rr.tolist(),
            "losses": losses.detach().tolist(), "chosen_rewards": cr.tolist(),
            "rejected_rewards": rj.tolist(), "d_chosen": pc.grad.tolist(),
            "d_rejected": pr.grad.tolist(),
        })
    write_fixture(os.path.join(OUT, "rlhf_preference_loss.safetensors"),
                  {"unused": torch.zeros(1)}, {"cases": cases})
    print(f"rlhf_preference_loss: {len(cases)} cases")


def sequence_logps(logits, targets):
    """-sum of token cross-entropies per row: (B,)."""
    B, T, V = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100,
                         reduction="none")
    return -ce.view(B, T).sum(1)


def train_dpo_fixture(name, cfg, seed, lora, beta=0.1, ls=0.0):
    gen = torch.Generator().manual_seed(seed)
    P, T, steps, micro = 2, 7, 6, 2
    base = random_weights(cfg, gen)
    init = {}
    for prefix, din, dout in lora_sites(cfg, lora):
        bound = 1 / math.sqrt(din)
        init[prefix + ".lora_a.weight"] = (torch.rand((lora["rank"], din), generator=gen) * 2 - 1) * bound
        # nonzero B so the policy differs from the reference from the first step
        init[prefix + ".lora_b.weight"] = 0.05 * torch.randn((dout, lora["rank"]), generator=gen)
    train = {k: v.clone().requires_grad_() for k, v in init.items()}
    params = dict(base)
    params.update(train)
    hp = dict(lr=0.02, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.05, max_norm=0.5, warmup=2,
              beta=beta, label_smoothing=ls)
    opt = torch.optim.AdamW(list(train.values()), lr=hp["lr"], betas=hp["betas"], eps=hp["eps"],
                            weight_decay=hp["weight_decay"])
    batches = [make_batch(cfg, gen, 2 * P, T, ignore=4) for _ in range(steps * micro)]
    losses, norms, rewards_c, rewards_r = [], [], [], []
    micro_step = 0
    for step in range(steps):
        lr = cosine_lr(hp["lr"], step, hp["warmup"], steps)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        total, rc_sum, rr_sum = 0.0, 0.0, 0.0
        for j in range(micro):
            tokens, targets = batches[step * micro + j]
            micro_step += 1
            with torch.no_grad():
                ref = sequence_logps(model_forward(Ctx(cfg), base, tokens), targets)
            seed_ms = mix_seed(lora["seed"], micro_step)
            pol = sequence_logps(model_forward(Ctx(cfg, lora, seed_ms), params, tokens), targets)
            pair_losses, cr, rr = dpo(pol[:P], pol[P:], ref[:P], ref[P:], beta, ls)
            loss = pair_losses.mean() / micro
            loss.backward()
            total += loss.item()
            rc_sum += cr.sum().item()
            rr_sum += rr.sum().item()
        norm = torch.nn.utils.clip_grad_norm_(list(train.values()), hp["max_norm"])
        opt.step()
        losses.append(total)
        norms.append(norm.item())
        rewards_c.append(rc_sum / (P * micro))
        rewards_r.append(rr_sum / (P * micro))
    out = {}
    for k, v in base.items():
        out["w." + k] = v
    for k, v in init.items():
        out["init." + k] = v
    for k, v in train.items():
        out["final." + k] = v
    out["tokens"] = torch.stack([b[0] for b in batches])
    out["targets"] = torch.stack([b[1] for b in batches])
    meta = {"config": meta_of(cfg), "P": P, "T": T, "steps": steps, "micro": micro, "hp": hp,
            "lora": lora, "losses": losses, "grad_norms": norms, "rewards_chosen": rewards_c,
            "rewards_rejected": rewards_r}
    write_fixture(os.path.join(OUT, f"{name}.safetensors"), out, meta)
    print(f"{name}: losses {[round(x, 6) for x in losses]}")


def one_step_fixture(name, cfg, seed, lora):
    """Adapter gradients of one micro-batch under SimPO (average log-probs, no reference)
    and RSO (hinge), each as the mean pair loss, from the same weights and batch."""
    gen = torch.Generator().manual_seed(seed)
    P, T = 3, 7
    base = random_weights(cfg, gen)
    init = {}
    for prefix, din, dout in lora_sites(cfg, lora):
        bound = 1 / math.sqrt(din)
        init[prefix + ".lora_a.weight"] = (torch.rand((lora["rank"], din), generator=gen) * 2 - 1) * bound
        init[prefix + ".lora_b.weight"] = 0.05 * torch.randn((dout, lora["rank"]), generator=gen)
    tokens, targets = make_batch(cfg, gen, 2 * P, T, ignore=5)
    counted = (targets != -100).sum(1).to(torch.float64)
    out = {"tokens": tokens, "targets": targets}
    for k, v in base.items():
        out["w." + k] = v
    for k, v in init.items():
        out["init." + k] = v
    meta = {"config": meta_of(cfg), "P": P, "T": T, "lora": lora}
    with torch.no_grad():
        ref = sequence_logps(model_forward(Ctx(cfg), base, tokens), targets).double()
    for kind in ("simpo", "rso"):
        train = {k: v.clone().requires_grad_() for k, v in init.items()}
        params = dict(base)
        params.update(train)
        # lora_dropout 0 here: the micro-step seed does not matter
        pol = sequence_logps(model_forward(Ctx(cfg, lora, None), params, tokens), targets).double()
        if kind == "simpo":
            avg = pol / counted
            losses, _, _ = simpo(avg[:P], avg[P:], 2.0, 0.5, 0.0)
        else:
            losses, _, _ = rso(pol[:P], pol[P:], ref[:P], ref[P:], 0.5)
        losses.mean().backward()
        meta[kind + "_loss"] = losses.mean().item()
        for k, v in train.items():
            out[f"{kind}.grad.{k}"] = v.grad
    write_fixture(os.path.join(OUT, f"{name}.safetensors"), out, meta)
    print(f"{name}: simpo {meta['simpo_loss']:.6f} rso {meta['rso_loss']:.6f}")


if __name__ == "__main__":
    loss_cases()
    train_dpo_fixture("model_train_dpo", config_a(), 5,
                      lora={"rank": 4, "alpha": 8.0, "dropout": 0.1, "seed": 42,
                            "attn": ["q_proj", "v_proj", "output_proj"], "mlp": True,
                            "output": True},
                      beta=0.5, ls=0.1)
    one_step_fixture("model_step_simpo_rso", config_a(), 6,
                     lora={"rank": 4, "alpha": 8.0, "dropout": 0.0, "seed": 42,
                           "attn": ["q_proj", "k_proj", "v_proj"], "mlp": True,
                           "output": False})
