"""Reference for 8-bit AdamW as bitsandbytes' AdamW8bit updates it (its pure-PyTorch
blockwise optimizer step, written here from its algorithm):

  dynamic maps: create_dynamic_map(signed=True / False) (7 exponent bits, 8 bits, torch fp32)
  state: 8-bit codes of blocks of 256 values + one fp32 absmax a block (absmax 0 -> 1),
         code = argmin |value / absmax - map| (the first on ties)
  step:  dequantize m, v; m = m*b1 + (1-b1) g; v = v*b2 + (1-b2) g g;
         denom = sqrt(v) / sqrt(1 - b2^t) + eps; p *= 1 - lr wd; p += -lr / (1 - b1^t) * m / denom;
         quantize m, v again
  tensors under min_8bit_size (4096) elements keep fp32 moments (the same step, no quantizing).

Writes tests/fixtures/adamw8bit.safetensors: the two maps, and for three tensors (5000 and
4096 elements in 8 bits, 300 in fp32) their initial values and the params and dequantized
moments after 10 steps with gradients from nf4_reference.hashed (remade by the test).
Run: /usr/bin/python3 tests/reference/adamw8bit_reference.py
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from fixture_io import write_fixture  # noqa: E402
from nf4_reference import hashed  # noqa: E402

BLOCK = 256


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    data = []
    non_sign_bits = total_bits - 1
    for i in range(max_exponent_bits):
        items = (2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                 else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = torch.linspace(0.1, 1, items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    data += [0] * (256 - len(data))
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def quantize(x, code):
    n = x.numel()
    blocks = math.ceil(n / BLOCK)
    xp = torch.nn.functional.pad(x, (0, blocks * BLOCK - n)).view(blocks, BLOCK)
    absmax = xp.abs().max(dim=1, keepdim=True).values
    absmax[absmax == 0] = 1.0
    idx = (xp / absmax).unsqueeze(2).sub(code).abs().argmin(dim=2)
    return idx.flatten()[:n].to(torch.uint8), absmax.flatten()


def dequantize(codes, absmax, code):
    n = codes.numel()
    blocks = absmax.numel()
    d = torch.nn.functional.pad(code[codes.long()], (0, blocks * BLOCK - n)).view(blocks, BLOCK)
    return (d * absmax.unsqueeze(1)).flatten()[:n]


def main():
    smap, umap = create_dynamic_map(True), create_dynamic_map(False)
    hp = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, steps=10)
    b1, b2 = hp["betas"]
    sizes = {"a": 5000, "b": 4096, "c": 300}
    out = {"map.signed": smap, "map.unsigned": umap}
    for k, (name, n) in enumerate(sizes.items()):
        p = hashed((n,), 50 + k, 0.5)
        out[f"{name}.init"] = p.clone()
        eight = n >= 4096
        if eight:
            mc, ma = torch.zeros(n, dtype=torch.uint8), torch.zeros(math.ceil(n / BLOCK))
            vc, va = mc.clone(), ma.clone()
        else:
            m, v = torch.zeros(n), torch.zeros(n)
        for t in range(1, hp["steps"] + 1):
            g = hashed((n,), 1000 * (k + 1) + t, 1.0, cube=True)
            if eight:
                m, v = dequantize(mc, ma, smap), dequantize(vc, va, umap)
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(1 - b2 ** t)).add_(hp["eps"])
            p.mul_(1 - hp["lr"] * hp["weight_decay"])
            p.addcdiv_(m, denom, value=-hp["lr"] / (1 - b1 ** t))
            if eight:
                (mc, ma), (vc, va) = quantize(m, smap), quantize(v, umap)
        if eight:
            m, v = dequantize(mc, ma, smap), dequantize(vc, va, umap)
        out[f"{name}.params"] = p
        out[f"{name}.m"] = m
        out[f"{name}.v"] = v
    path = os.path.join(os.path.dirname(__file__), "..", "fixtures", "adamw8bit.safetensors")
    write_fixture(path, out, {"hp": hp, "sizes": sizes})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
