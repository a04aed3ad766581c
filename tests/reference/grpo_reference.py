"""PyTorch reference for tune's GRPO loss (src/rlhf/grpo_loss.ts).

Run with Debian's torch: /usr/bin/python3 tests/reference/grpo_reference.py
Writes tests/fixtures/rlhf_grpo_loss.safetensors and model_step_grpo.safetensors (read by
tests/grpo_loss_test.ts).

Definitions follow TRL's GRPOTrainer (trl/trainer/grpo_trainer.py, `_compute_loss` and the
advantage code of `_generate_and_score_completions`), written out here from the published
algorithm in float64: advantages r - group mean, divided by (torch.std + 1e-4) unless
scale_rewards is off; per-token ratio exp(logp - old), loss -min(ratio A, clamp(ratio,
1 - eps_low, 1 + eps_high) A) + beta * k3 KL; normalisation per loss_type (grpo: mean over
each sequence's tokens then over sequences; bnpo/dapo: over all tokens; dr_grpo: sum /
(S * max_completion_length)). torchtune's two dev losses are also written out as its
source defines them (GRPOLoss: masked_mean over the whole batch, symmetric clip;
GRPOSimpleLoss: ratio exp(logp - logp.detach()), per-sequence masked mean then mean), to
show they are the "token" and on-policy "sequence" settings of the same code.
Gradients w.r.t. the log-probabilities and (model fixture) LoRA adapters by autograd.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from fixture_io import write_fixture  # noqa: E402
from model_reference import (  # noqa: E402
    Ctx, OUT, config_a, lora_sites, meta_of, model_forward, random_weights)


def advantages(rewards, G, scale):
    grouped = rewards.view(-1, G)
    mean = grouped.mean(1, keepdim=True)
    a = grouped - mean
    if scale:
        a = a / (grouped.std(1, keepdim=True) + 1e-4)
    return a.reshape(-1)


def trl_loss(lp, old, ref, adv, mask, loss_type, eps_low, eps_high, beta, max_len):
    coef_1 = torch.exp(lp - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    a = adv[:, None]
    per_token = -torch.min(coef_1 * a, coef_2 * a)
    if beta != 0.0:
        kl = torch.exp(ref - lp) - (ref - lp) - 1
        per_token = per_token + beta * kl
    m = mask.to(lp.dtype)
    if loss_type == "grpo":
        return ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    if loss_type in ("bnpo", "dapo"):
        return (per_token * m).sum() / m.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return (per_token * m).sum() / (per_token.size(0) * max_len)
    raise ValueError(loss_type)


def masked_mean(x, m, dim=None):
    m = m.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum()
    return (x * m).sum(dim) / m.sum(dim)


def torchtune_grpo_loss(lp, old, ref, adv, mask, eps, kl_coeff):
    ratios = torch.exp(lp - old)
    clipped = torch.clamp(ratios, 1.0 - eps, 1.0 + eps)
    a = adv[:, None]
    policy = masked_mean(torch.minimum(a * clipped, a * ratios), mask)
    kl = masked_mean(torch.exp(ref - lp) - (ref - lp) - 1, mask)
    return -(policy - kl_coeff * kl)


def torchtune_simple_loss(lp, ref, adv, mask, kl_coeff):
    kl = torch.exp(ref.detach() - lp) - (ref.detach() - lp) - 1
    policy = torch.exp(lp - lp.detach()) * adv[:, None]
    per_token = -(policy - kl_coeff * kl)
    return masked_mean(per_token, mask, dim=1).mean()


# (name, settings for tune, loss fn of (lp, old, ref, adv, mask))
def specs(max_len):
    def trl(kind, el, eh, beta):
        return lambda lp, old, ref, adv, m: trl_loss(lp, old, ref, adv, m, kind, el, eh, beta,
                                                    max_len)
    return [
        ("grpo", dict(normalization="sequence", scale=True, eps_low=0.2, eps_high=0.2,
                      beta=0.04, on_policy=False), trl("grpo", 0.2, 0.2, 0.04)),
        ("bnpo", dict(normalization="token", scale=True, eps_low=0.2, eps_high=0.2,
                      beta=0.1, on_policy=False), trl("bnpo", 0.2, 0.2, 0.1)),
        ("dr_grpo", dict(normalization="constant", scale=False, eps_low=0.2, eps_high=0.2,
                         beta=0.0, on_policy=False), trl("dr_grpo", 0.2, 0.2, 0.0)),
        ("dapo", dict(normalization="token", scale=True, eps_low=0.2, eps_high=0.28,
                      beta=0.0, on_policy=False), trl("dapo", 0.2, 0.28, 0.0)),
        ("torchtune.GRPOLoss", dict(normalization="token", scale=True, eps_low=0.1,
                                    eps_high=0.1, beta=0.1, on_policy=False),
         lambda lp, old, ref, adv, m: torchtune_grpo_loss(lp, old, ref, adv, m, 0.1, 0.1)),
        ("torchtune.GRPOSimpleLoss", dict(normalization="sequence", scale=True, eps_low=0.2,
                                          eps_high=0.2, beta=0.01, on_policy=True),
         lambda lp, old, ref, adv, m: torchtune_simple_loss(lp, ref, adv, m, 0.01)),
    ]


def loss_cases():
    gen = torch.Generator().manual_seed(22)
    G, groups, L, max_len = 4, 3, 6, 8
    S = G * groups
    lp0 = -3 * torch.rand(S, L, generator=gen, dtype=torch.float64)
    # old log-probs far enough from the current ones that both clip sides are hit
    old = lp0 + 0.4 * torch.randn(S, L, generator=gen, dtype=torch.float64)
    ref = lp0 + 0.5 * torch.randn(S, L, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, L + 1, (S,), generator=gen)
    lengths[0] = L
    mask = torch.arange(L)[None, :] < lengths[:, None]
    rewards = torch.randint(0, 3, (S,), generator=gen).to(torch.float64)
    rewards[G:2 * G] = 1.0  # a group with equal rewards: advantages 0
    cases = []
    for name, hp, fn in specs(max_len):
        adv = advantages(rewards, G, hp["scale"])
        lp = lp0.clone().requires_grad_()
        loss = fn(lp, old, ref, adv, mask)
        loss.backward()
        cases.append({"name": name, "hp": hp, "advantages": adv.tolist(), "loss": loss.item(),
                      "d_log_probs": lp.grad.reshape(-1).tolist()})
        print(f"{name}: loss {loss.item():.9f}")
    meta = {"G": G, "S": S, "L": L, "max_len": max_len, "rewards": rewards.tolist(),
            "log_probs": lp0.reshape(-1).tolist(), "old_log_probs": old.reshape(-1).tolist(),
            "ref_log_probs": ref.reshape(-1).tolist(),
            "mask": mask.to(torch.int32).reshape(-1).tolist(), "cases": cases}
    write_fixture(os.path.join(OUT, "rlhf_grpo_loss.safetensors"), {"unused": torch.zeros(1)},
                  meta)


def token_logps(logits, targets):
    B, T, V = logits.shape
    safe = targets.clamp(min=0)
    lps = F.log_softmax(logits.double(), -1).gather(-1, safe[..., None])[..., 0]
    return lps


def model_fixture():
    """Adapter gradients of one GRPO micro-batch on the tiny LoRA Llama: S sequences of a
    prompt (targets -100) then a completion of varying length (padding -100); old log-probs
    from the adapters before a perturbation, reference = the base without adapters."""
    cfg = config_a()
    lora = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "seed": 42,
            "attn": ["q_proj", "v_proj"], "mlp": True, "output": True}
    gen = torch.Generator().manual_seed(23)
    G, groups, T, prompt = 3, 2, 9, 3
    S = G * groups
    base = random_weights(cfg, gen)
    init = {}
    for prefix, din, dout in lora_sites(cfg, lora):
        init[prefix + ".lora_a.weight"] = 0.1 * torch.randn((lora["rank"], din), generator=gen)
        init[prefix + ".lora_b.weight"] = 0.1 * torch.randn((dout, lora["rank"]), generator=gen)
    old_adapters = {k: v + 0.02 * torch.randn(v.shape, generator=gen) for k, v in init.items()}
    tokens = torch.randint(0, cfg["vocab"], (S, T), generator=gen)
    targets = torch.full((S, T), -100, dtype=torch.int64)
    lengths = torch.randint(1, T - prompt + 1, (S,), generator=gen)
    for s in range(S):
        # row t predicts tokens[t + 1]; completion rows start at the last prompt token
        for t in range(prompt - 1, prompt - 1 + int(lengths[s])):
            targets[s, t] = tokens[s, t + 1] if t + 1 < T else 0
    mask = targets != -100
    rewards = torch.tensor([1.0, 0.0, 0.0, 2.0, 1.0, 2.0], dtype=torch.float64)
    out = {"tokens": tokens, "targets": targets}
    for k, v in base.items():
        out["w." + k] = v
    for k, v in init.items():
        out["init." + k] = v
    meta = {"config": meta_of(cfg), "S": S, "G": G, "T": T, "lora": lora,
            "rewards": rewards.tolist()}
    with torch.no_grad():
        old_params = dict(base)
        old_params.update(old_adapters)
        old = token_logps(model_forward(Ctx(cfg, lora, None), old_params, tokens), targets)
        ref = token_logps(model_forward(Ctx(cfg), base, tokens), targets)
    out["old_log_probs"] = old
    for name, hp, fn in specs(T):
        if name not in ("grpo", "dapo", "torchtune.GRPOSimpleLoss"):
            continue
        train = {k: v.clone().requires_grad_() for k, v in init.items()}
        params = dict(base)
        params.update(train)
        lp = token_logps(model_forward(Ctx(cfg, lora, None), params, tokens), targets)
        adv = advantages(rewards, G, hp["scale"])
        loss = fn(lp, old, ref, adv, mask)
        loss.backward()
        meta[name + ".loss"] = loss.item()
        meta[name + ".hp"] = hp
        for k, v in train.items():
            out[f"{name}.grad.{k}"] = v.grad
        print(f"model {name}: loss {loss.item():.9f}")
    write_fixture(os.path.join(OUT, "model_step_grpo.safetensors"), out, meta)


if __name__ == "__main__":
    loss_cases()
    model_fixture()
