/**
 * GPU checks against PyTorch on the same GPU (when python3 has torch with CUDA): matmul,
 * attention and cross-entropy. Runs under `deno test` when a GPU answers and from
 * scripts/gpu_check.ts; without torch it prints one "skip" line and checks nothing.
 */
import { roundArrayBf16 } from "../../src/backend/cpu/buffer.ts";
import {
  BF16,
  check,
  cmpArrays,
  F32_PROD,
  gpu,
  gpuTest,
  randInt,
  randn,
  selected,
  selfTest,
  SMALL,
} from "./_harness.ts";

// ---- PyTorch on the same GPU (when python3 has torch with CUDA) ------------------------------

const TORCH_SCRIPT = `
import sys, numpy as np, torch, torch.nn.functional as F
d, case = sys.argv[1], sys.argv[2]
def rd(n, *shape): return torch.from_numpy(np.fromfile(f"{d}/{n}", dtype=np.float32).reshape(*shape)).cuda()
def wr(n, t): t.detach().float().cpu().numpy().astype(np.float32).tofile(f"{d}/{n}")
m = [int(x) for x in sys.argv[3:]]
if case == "matmul":
    M, K, N = m
    wr("out", rd("x", M, K).bfloat16() @ rd("w", N, K).bfloat16().t())
elif case == "attention":
    B, T, NH, NKV, HS = m
    q = rd("q", B, T, NH, HS).bfloat16().transpose(1, 2)
    k = rd("k", B, T, NKV, HS).bfloat16().transpose(1, 2).repeat_interleave(NH // NKV, dim=1)
    v = rd("v", B, T, NKV, HS).bfloat16().transpose(1, 2).repeat_interleave(NH // NKV, dim=1)
    wr("out", F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2))
elif case == "cross_entropy":
    N, V = m
    t = torch.from_numpy(np.fromfile(f"{d}/t", dtype=np.int32).astype(np.int64)).cuda()
    wr("out", F.cross_entropy(rd("logits", N, V), t, ignore_index=-100, reduction="none"))
print("torch", torch.__version__, torch.cuda.get_device_name())
`;

/** Run TORCH_SCRIPT's `case` on the GPU with inputs written to a temp dir; its output. */
function torchRun(
  files: Record<string, Float32Array | Int32Array>,
  kase: string,
  dims: number[],
  outLen: number,
): Float32Array {
  const dir = Deno.makeTempDirSync({ prefix: "tune_torch_" });
  try {
    for (const [n, a] of Object.entries(files)) {
      Deno.writeFileSync(`${dir}/${n}`, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    }
    const r = new Deno.Command("python3", {
      args: ["-c", TORCH_SCRIPT, dir, kase, ...dims.map(String)],
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    if (!r.success) {
      const err = new TextDecoder().decode(r.stderr).trim().split("\n").slice(-3).join(" | ");
      throw new Error(`python3 (torch) failed: ${err}`);
    }
    const out = new Float32Array(Deno.readFileSync(`${dir}/out`).buffer);
    if (out.length !== outLen) {
      throw new Error(`torch wrote ${out.length} values, expected ${outLen}`);
    }
    return out;
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

function torchAvailable(): boolean {
  try {
    return new Deno.Command("python3", {
      args: ["-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
}

export function torchChecks(): void {
  if (selfTest || SMALL || !selected("torch")) return;
  if (!torchAvailable()) {
    console.log("skip  PyTorch comparison: python3 with torch and CUDA not found");
    return;
  }
  const bf = (a: Float32Array) => {
    const r = new Float32Array(a.length);
    roundArrayBf16(r, a);
    return r;
  };
  check("torch: matmul bf16 512x1024x2816", () => {
    const M = 512, K = 1024, N = 2816;
    const x = bf(randn(M * K)), w = bf(randn(N * K, 1 / 32));
    const xg = gpu.alloc(M * K, "bf16"), wg = gpu.alloc(N * K, "bf16");
    const og = gpu.alloc(M * N, "bf16");
    gpu.upload(xg, x);
    gpu.upload(wg, w);
    gpu.matmulForward(og, xg, wg, null, M, K, N);
    const got = gpu.download(og);
    for (const b of [xg, wg, og]) gpu.free(b);
    const ref = torchRun({ x, w }, "matmul", [M, K, N], M * N);
    return [cmpArrays("out vs torch", got, ref, BF16)];
  });
  check("torch: attention bf16 B=2 T=256 NH=16 NKV=4 HS=64", () => {
    const B = 2, T = 256, NH = 16, NKV = 4, HS = 64;
    const q = bf(randn(B * T * NH * HS)), k = bf(randn(B * T * NKV * HS));
    const v = bf(randn(B * T * NKV * HS));
    const buf = (h: Float32Array) => {
      const g = gpu.alloc(h.length, "bf16");
      gpu.upload(g, h);
      return g;
    };
    const qg = buf(q), kg = buf(k), vg = buf(v);
    const og = gpu.alloc(B * T * NH * HS, "bf16"), lg = gpu.alloc(B * NH * T, "f32");
    gpu.attentionForward(og, lg, qg, kg, vg, B, T, T, T, NH, NKV, HS);
    const got = gpu.download(og);
    for (const b of [qg, kg, vg, og, lg]) gpu.free(b);
    const ref = torchRun({ q, k, v }, "attention", [B, T, NH, NKV, HS], B * T * NH * HS);
    return [cmpArrays("out vs torch", got, ref, BF16)];
  });
  check("torch: crossEntropy f32 N=256 V=32000", () => {
    const N = 256, V = 32000;
    const logits = randn(N * V, 3), t = randInt(N, V);
    for (let i = 0; i < N; i += 7) t[i] = -100;
    const lg = gpu.alloc(N * V, "f32"), tg = gpu.alloc(N, "i32"), ls = gpu.alloc(N, "f32");
    gpu.upload(lg, logits);
    gpu.upload(tg, t);
    gpu.crossEntropy(ls, null, lg, tg, N, V, 1);
    const got = gpu.download(ls);
    for (const b of [lg, tg, ls]) gpu.free(b);
    const ref = torchRun({ logits, t }, "cross_entropy", [N, V], N);
    return [cmpArrays("losses vs torch", got, ref, F32_PROD)];
  });
}

gpuTest("matmul, attention and cross-entropy against PyTorch on the same GPU", torchChecks);
