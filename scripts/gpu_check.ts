/**
 * GPU check: every op of the CUDA backend against the CPU backend (the numerical oracle)
 * on fresh random inputs at realistic sizes (f32 and bf16), opt-in TF32, NCCL at world
 * size 1, matmul/attention/cross-entropy against PyTorch on the same GPU (when python3 has
 * torch), timings (information only), then the tiny Llama: one training step (full and
 * LoRA) on both backends, 10 AdamW steps against the PyTorch fixture, and the aidreams260K
 * mean cross-entropy and greedy generation against reference.jsonl; last, activation
 * offloading off and on (bitwise, with the device memory each way). One line per check
 * with its worst error and PASS/FAIL; exit code 1 if anything fails. One failing check
 * does not stop the others (a CUDA error that poisons the context fails the rest).
 *
 *   deno run -A scripts/gpu_check.ts               # everything (a few minutes on one H100)
 *   deno run -A scripts/gpu_check.ts --only=matmul,attention   # checks whose name matches
 *   deno run -A scripts/gpu_check.ts --no-model    # ops only
 *   deno run -A scripts/gpu_check.ts --self-test   # no GPU: a CPU stand-in tests the script
 *   deno run -A scripts/gpu_check.ts --small       # tiny shapes (for the kernel emulator)
 *
 * On a lent GPU machine (no Deno, no ../shared, no network there), scripts/gpu_session.sh runs
 * this script, the NCCL tests and the benchmark in one call; its header says how to prepare
 * the `.gpu` folder the call carries.
 *
 * The checks live in tests/gpu/<family>_test.ts (harness and tolerances in tests/gpu/_harness.ts),
 * where `deno test` runs them when a GPU is present and ignores them, visibly, otherwise. This
 * script is their runner for one process: the GPU session, and the CPU kernel emulator of
 * tests/cuda_emulator_test.ts (--small). It adds the timings (information only); the
 * tolerances are stated in tests/gpu/_harness.ts.
 */
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createCudaBackend, type CudaBackend } from "../src/backend/cuda/backend.ts";
import { cublasLt, cublasLtPath } from "../ffi/cublaslt.ts";
import {
  cpu,
  CpuStandIn,
  results,
  selected,
  selfTest,
  setBackends,
  SMALL,
  type UnderTest,
  withModel,
} from "../tests/gpu/_harness.ts";
import { adapterChecks } from "../tests/gpu/adapters_test.ts";
import { nf4Checks } from "../tests/gpu/nf4_test.ts";
import { offloadChecks } from "../tests/gpu/offload_test.ts";
import {
  attentionChecks,
  flashAttentionChecks,
  kvCacheChecks,
  tiledAttentionChecks,
} from "../tests/gpu/attention_test.ts";
import { elementwiseChecks } from "../tests/gpu/elementwise_test.ts";
import { activationChecks } from "../tests/gpu/activations_test.ts";
import { embeddingChecks } from "../tests/gpu/embedding_test.ts";
import { lossChecks } from "../tests/gpu/loss_test.ts";
import { normChecks } from "../tests/gpu/norm_test.ts";
import { optimizerChecks } from "../tests/gpu/optimizer_test.ts";
import { ropeChecks } from "../tests/gpu/rope_test.ts";
import { matmulChecks } from "../tests/gpu/matmul_test.ts";
import { memoryChecks } from "../tests/gpu/memory_test.ts";
import { modelChecks } from "../tests/gpu/model_test.ts";
import { ncclChecks } from "../tests/gpu/nccl_test.ts";
import { torchChecks } from "../tests/gpu/torch_test.ts";

// ---- timings (information only, never pass/fail) -------------------------------------------

function timings(gpu: UnderTest): void {
  if (selfTest || SMALL || !selected("timing")) return;
  const g = gpu as unknown as CudaBackend;
  try {
    const n = 4096;
    const a = g.alloc(n * n, "bf16"), b = g.alloc(n * n, "bf16"), c = g.alloc(n * n, "bf16");
    g.matmulForward(c, a, b, null, n, n, n); // warm-up: heuristic + first launch
    const ms = g.timeMs(() => {
      for (let i = 0; i < 10; i++) g.matmulForward(c, a, b, null, n, n, n);
    }) / 10;
    console.log(
      `info  matmul bf16 ${n}^3: ${ms.toFixed(3)} ms, ${
        (2 * n ** 3 / ms / 1e9).toFixed(0)
      } TFLOP/s`,
    );
    for (const buf of [a, b, c]) g.free(buf);
    for (const [B, T, NH, NKV, HS] of [[4, 1024, 32, 8, 128], [4, 2048, 32, 8, 64]]) {
      attentionTiming(g, B, T, NH, NKV, HS);
    }
  } catch (e) {
    console.log(`info  timings failed: ${(e as Error).message}`);
  }
}

/** Forward and backward times of the default (flash) and the general attention kernels. */
function attentionTiming(
  g: CudaBackend,
  B: number,
  T: number,
  NH: number,
  NKV: number,
  HS: number,
) {
  const q = g.alloc(B * T * NH * HS, "bf16"), k = g.alloc(B * T * NKV * HS, "bf16");
  const v = g.alloc(B * T * NKV * HS, "bf16"), o = g.alloc(B * T * NH * HS, "bf16");
  const lse = g.alloc(B * NH * T, "f32");
  g.fill(q, 0.01);
  g.fill(k, 0.02);
  g.fill(v, 0.03);
  const dq = g.alloc(B * T * NH * HS, "bf16"), dk = g.alloc(B * T * NKV * HS, "bf16");
  const dvb = g.alloc(B * T * NKV * HS, "bf16");
  const flops = 2 * 2 * B * NH * T * T * HS / 2; // causal half of QK^T and PV, forward
  const parts: string[] = [];
  for (const kind of ["flash", "simple"] as const) {
    const be = kind === "flash" ? g : createCudaBackend({ attention: kind });
    be.attentionForward(o, lse, q, k, v, B, T, T, T, NH, NKV, HS); // warm-up
    const fwd = be.timeMs(() => be.attentionForward(o, lse, q, k, v, B, T, T, T, NH, NKV, HS));
    const bwd = be.timeMs(() =>
      be.attentionBackward(dq, dk, dvb, o, q, k, v, o, lse, B, T, NH, NKV, HS)
    );
    if (be !== g) be.destroy();
    parts.push(
      `${kind}: forward ${fwd.toFixed(2)} ms (${(flops / fwd / 1e9).toFixed(0)} TFLOP/s), ` +
        `backward ${bwd.toFixed(2)} ms (${(2.5 * flops / bwd / 1e9).toFixed(0)} TFLOP/s)`,
    );
  }
  console.log(`info  attention B=${B} T=${T} NH=${NH} NKV=${NKV} HS=${HS}: ${parts.join("; ")}`);
  for (const buf of [q, k, v, o, lse, dq, dk, dvb]) g.free(buf);
}

// ---- main ------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const t0 = performance.now();
  let gpu: UnderTest;
  try {
    gpu = selfTest ? new CpuStandIn() : createCudaBackend();
    setBackends(new CpuBackend(), gpu);
  } catch (e) {
    console.log(`FAIL  createCudaBackend: ${e instanceof Error ? (e.stack ?? e.message) : e}`);
    return 1;
  }
  const info = gpu.info;
  const dv = info.driverVersion;
  console.log(
    `GPU ${info.name}, ${(info.totalBytes / 2 ** 30).toFixed(1)} GiB, sm_${
      info.computeCapability.join("")
    }, ${info.multiprocessors} SMs, driver API ${Math.floor(dv / 1000)}.${(dv % 1000) / 10}`,
  );
  if (!selfTest) {
    console.log(
      `cuBLASLt ${cublasLt().cublasLtGetVersion()} from ${cublasLtPath()}; backend ready in ${
        (performance.now() - t0).toFixed(0)
      } ms (driver JIT of the PTX included)`,
    );
  }
  console.log(`CPU oracle: matmul via ${cpu.matmulPath}`);

  memoryChecks();
  elementwiseChecks();
  matmulChecks();
  for (const dt of ["f32", "bf16"] as const) {
    embeddingChecks(dt);
    normChecks(dt);
    ropeChecks(dt);
    activationChecks(dt);
    lossChecks(dt);
    kvCacheChecks(dt);
  }
  optimizerChecks();
  adapterChecks();
  nf4Checks();
  attentionChecks();
  tiledAttentionChecks();
  flashAttentionChecks();
  await ncclChecks();
  torchChecks();
  timings(gpu);
  if (withModel) await modelChecks();
  // activation offloading: bitwise off vs on, and the device memory each way for the record
  if (withModel) await offloadChecks();

  const failed = results.filter((r) => !r.ok);
  console.log(
    `\n${results.length - failed.length}/${results.length} checks passed in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s; GPU memory in use ${gpu.bytesInUse()} B, reserved ${gpu.bytesReserved()} B`,
  );
  if (failed.length > 0) console.log(`failed: ${failed.map((f) => f.name).join(", ")}`);
  return failed.length > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
