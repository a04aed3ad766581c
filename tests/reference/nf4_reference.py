"""NF4 quantization as torchao's NF4Tensor does it (to_nf4 with block_size 64 and
scaler_block_size 256), written from its algorithm with torch ops in the tensor's dtype:

  absmax per block of 64 -> mean of the absmaxes (see below) -> absmax - mean, quantized to int8 in
  groups of 256 with factor 256 / (2 * absmax of the group) (round half to even, clamp)
  -> each value divided by its block's absmax and coded as the nearest of the 16 NF4 levels
  (first level on ties), two codes a byte, the first in the high nibble.
  Dequantized: level * (int8 / factor + mean), every step in the tensor's dtype.

Writes tests/fixtures/nf4.safetensors: for each case (inputs from `hashed`, which the test
remakes) the packed codes and int8 block scalers (their bytes, little-endian, four to an i32),
factors, mean and the dequantized tensor.
Run with Debian's python3-torch: /usr/bin/python3 tests/reference/nf4_reference.py
"""
import os

import torch

from fixture_io import write_fixture

NF4 = [-1.0000, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0000,
       0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0000]
BLOCK = 64
SCALER_BLOCK = 256


def block_absmax(x, size):
    return x.view(-1, size).abs().max(dim=1).values


def to_nf4(w):
    assert w.dim() <= 2 and w.numel() % BLOCK == 0
    dtype = w.dtype
    nf4 = torch.tensor(NF4, dtype=dtype)
    flat = w.flatten()
    n_blocks = flat.numel() // BLOCK
    # double quantization of the block scalers
    absmax = block_absmax(flat, BLOCK)
    # torchao takes absmax.mean() in the dtype, whose last bit depends on torch's reduction
    # order (vector width, threads, CPU or CUDA); tune defines it as the fp64 mean rounded to
    # the dtype, the same on every device (one ulp from torch's fp32 sum at most)
    mean = absmax.double().mean().to(dtype)
    centred = absmax - mean
    assert n_blocks % SCALER_BLOCK == 0
    groups = centred.view(-1, SCALER_BLOCK)
    gabs = block_absmax(centred, SCALER_BLOCK).unsqueeze(-1).expand(-1, SCALER_BLOCK)
    factor = 256 / (2 * gabs)
    qs = (groups * factor).round().clamp(-128, 127).flatten().to(torch.int8)
    factor = factor[:, 0].contiguous()
    # codes: nearest level of each value over its block's absmax
    scaled = (flat.view(n_blocks, BLOCK) / absmax.unsqueeze(-1)).flatten()
    codes = (scaled.unsqueeze(-1) - nf4).abs().min(dim=-1).indices.to(torch.uint8)
    packed = codes[::2] << 4 | codes[1::2]
    # dequantize from the stored pieces only
    scalers = (qs.view(-1, SCALER_BLOCK) / factor.unsqueeze(-1)).flatten().to(dtype) + mean
    hi = nf4[(packed >> 4).long()]
    lo = nf4[(packed & 15).long()]
    rep = scalers.unsqueeze(-1).expand(-1, BLOCK // 2).flatten()
    deq = torch.stack([hi * rep, lo * rep], dim=-1).reshape(w.shape)
    return codes, qs, factor, mean, deq


M32 = 0xFFFFFFFF


def _mix(x):
    x = (x ^ (x >> 16)) & M32
    x = (x * 0x7FEB352D) & M32
    x = (x ^ (x >> 15)) & M32
    x = (x * 0x846CA68B) & M32
    return (x ^ (x >> 16)) & M32


def hashed(shape, seed, scale, cube=False):
    """Deterministic test values tests/_quant_helpers.ts hashedTensor makes too (no torch RNG):
    u = 2 * bits / 2^32 - 1 from src/backend/cpu/dropout.ts's counter hash, value
    (u or u*u*u) * scale, computed in fp64 and rounded to fp32."""
    n = 1
    for d in shape:
        n *= d
    key = _mix(torch.tensor(((seed % (1 << 32)) ^ 0x9E3779B9) & M32, dtype=torch.int64))
    i = torch.arange(n, dtype=torch.int64)
    r = _mix((_mix(i ^ key) + key) & M32)
    u = r.double() / 4294967296.0 * 2 - 1
    if cube:
        u = u * u * u
    return (u * scale).float().view(shape)


def main():
    cases = {
        "f32_128x128": hashed((128, 128), 1, 0.05),
        "f32_flat16384": hashed((16384,), 2, 2.0),
        "bf16_128x128": hashed((128, 128), 3, 0.05, cube=True).bfloat16(),
    }
    # heavy-tailed, two scaler groups, one all-zero block: absmax 0 gives 0/0 (code 0, as torch)
    t = hashed((128, 256), 4, 0.1, cube=True) + 0.001
    t[3, 64:128] = 0
    cases["f32_zero_block_128x256"] = t
    tensors = {}
    for name, w in cases.items():
        codes, qs, factor, mean, deq = to_nf4(w)
        # the bytes as tune holds them: packed codes and int8 scalers, 4 bytes an i32
        tensors[f"{name}.packed"] = (codes[::2] << 4 | codes[1::2]).view(torch.int32)
        tensors[f"{name}.scalers"] = qs.view(torch.int32)
        tensors[f"{name}.factors"] = factor.float()
        tensors[f"{name}.mean"] = mean.float().reshape(1)
        tensors[f"{name}.dequantized"] = deq.float()
        tensors[f"{name}.input_sum"] = w.double().sum().reshape(1)
    out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "nf4.safetensors")
    write_fixture(out, tensors, {"cases": list(cases.keys()),
                                 "shapes": {k: list(v.shape) for k, v in cases.items()}})
    print(f"wrote {out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
