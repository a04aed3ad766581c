/**
 * The CUDA per-op profiler (src/backend/cuda/profile.ts): its aggregation and table on
 * given times, and the backend's hooks against the fake driver (tests/cuda_fake_driver.c,
 * built here with gcc; kernels are not run, cuBLASLt products are): which rows a few ops
 * make, their counts, matmul FLOPs, host waits, event pool reuse. No test reads a timing
 * (the fake's events all report 1.5 ms).
 */
import assert from "node:assert/strict";
import {
  formatProfile,
  gemmName,
  type ProfileReport,
  ProfileTotals,
} from "../src/backend/cuda/profile.ts";
import { buildFakeDriver, hasGcc } from "./_fake_driver.ts";

const ROOT = new URL("../", import.meta.url).href;

const HAS_GCC = hasGcc();
if (!HAS_GCC) console.warn("cuda_profile_test: gcc not found, skipping the fake-driver tests");

Deno.test("`ProfileTotals.rows()` sums counts, times and FLOPs by name, largest first", () => {
  const t = new ProfileTotals();
  t.add("gemm 4x4x4 bf16->bf16 TN (fwd)", "gemm", 2, 128);
  t.add("ew_add", "kernel", 1, 0);
  t.add("gemm 4x4x4 bf16->bf16 TN (fwd)", "gemm", 4, 128);
  t.add("ew_add", "kernel", 1, 0);
  t.addWait("sync()", 3);
  t.addWait("sum", 5);
  t.addWait("sync()", 1);
  const { rows, busyMs } = t.rows();
  assert.equal(busyMs, 8);
  assert.deepEqual(rows.map((r) => [r.name, r.count, r.totalMs]), [
    ["gemm 4x4x4 bf16->bf16 TN (fwd)", 2, 6],
    ["ew_add", 2, 2],
  ]);
  assert.equal(rows[0].share, 0.75);
  assert.equal(rows[0].flops, 256);
  assert.equal(rows[0].tflops, 256 / (6 * 1e9)); // flops / (ms * 1e9)
  assert.equal(rows[1].tflops, null);
  assert.equal(rows[1].avgUs, 1000);
  assert.equal(t.ops, 4);
  assert.deepEqual(t.hostWaits(), [{ name: "sum", count: 1, ms: 5 }, {
    name: "sync()",
    count: 2,
    ms: 4,
  }]);
});

Deno.test("`gemmName()` names shape, dtypes, transposes and role", () => {
  const s = { m: 2048, n: 8192, k: 512 };
  assert.equal(
    gemmName({ ...s, transA: true, transB: false }, "bf16", "bf16"),
    "gemm 2048x8192x512 bf16->bf16 TN (fwd)",
  );
  assert.equal(
    gemmName({ ...s, transA: false, transB: false }, "bf16", "f32"),
    "gemm 2048x8192x512 bf16->f32 NN (bwd dinp)",
  );
  assert.equal(
    gemmName({ ...s, transA: false, transB: true, batch: 3 }, "f32", "f32"),
    "gemm 2048x8192x512 x3 f32->f32 NT (bwd dweight)",
  );
});

Deno.test("`formatProfile()` prints the summary, the top rows and a line for the rest", () => {
  const t = new ProfileTotals();
  for (let i = 0; i < 5; i++) t.add(`k${i}`, "kernel", 5 - i, 0);
  const { rows, busyMs } = t.rows();
  const r: ProfileReport = {
    rows,
    wallMs: 20,
    gpuBusyMs: busyMs,
    gpuSpanMs: 16,
    ops: 5,
    hostWaits: [{ name: "sync()", count: 1, ms: 2 }],
    newDeviceBytes: 3 * 2 ** 20,
  };
  const lines = formatProfile(r, 3);
  assert.match(lines[0], /^wall 20\.00 ms; GPU busy 15\.00 ms \(75\.0% of wall\)/);
  assert.match(lines[0], /wall - busy 5\.00 ms/);
  assert.match(lines[1], /sync\(\) x1 2\.00 ms/);
  assert.equal(lines[2], "new device memory from the driver: 3.0 MiB");
  lines.splice(2, 1);
  assert.match(lines[2], /^op\s+kind\s+count\s+total ms\s+share %\s+avg us\s+TFLOP\/s$/);
  assert.deepEqual(lines.slice(3, 6).map((l) => l.split(/\s+/)[0]), ["k0", "k1", "k2"]);
  assert.match(lines[6], /^\(2 more\)\s+2\s+3\.000\s+20\.0$/);
  assert.equal(lines.length, 7);
});

/** Child of the fake-driver tests: a few backend ops under the profiler, rows as JSON. */
const CHILD = `
const lib = Deno.args[0];
Deno.env.set("TUNE_LIBCUDA", lib);
Deno.env.set("TUNE_LIBCUBLASLT", lib);
const { createCudaBackend } = await import("${ROOT}src/backend/cuda/backend.ts");
const fake = Deno.dlopen(lib, {
  fake_event_creates: { parameters: [], result: "i64" },
  fake_event_records: { parameters: [], result: "i64" },
  fake_events_live: { parameters: [], result: "i64" },
}).symbols;
const be = createCudaBackend();
const [M, K, N] = [8, 16, 32];
const x = be.alloc(M * K, "bf16"), w = be.alloc(N * K, "f32"), y = be.alloc(M * N, "bf16");
const dx = be.alloc(M * K, "bf16"), dw = be.alloc(N * K, "f32"), f = be.alloc(64, "f32");
be.upload(x, new Float32Array(M * K).fill(0.5));
const ops = () => {
  be.upload(w, new Float32Array(N * K).fill(0.25));
  be.matmulForward(y, x, w, null, M, K, N);
  be.matmulForward(y, x, w, null, M, K, N);
  be.matmulBackward(dx, dw, null, y, x, w, M, K, N);
  for (let i = 0; i < 3; i++) be.add(f, f, f);
  be.fill(f, 1);
  be.copy(be.view(f, 0, 32), be.view(f, 32, 32));
  be.sum(f);
  be.sync();
};
const r0 = fake.fake_event_records();
ops(); // not profiled: no events
const unprofiled = Number(fake.fake_event_records() - r0);
be.startProfile();
ops();
const rows = be.stopProfile();
const report = be.lastProfile;
const records = Number(fake.fake_event_records() - r0);
const creates = Number(fake.fake_event_creates());
be.startProfile();
ops();
be.stopProfile();
const createsAgain = Number(fake.fake_event_creates());
const ops2 = be.lastProfile.ops;
be.destroy();
console.log(JSON.stringify({
  rows, report, unprofiled, records, creates, createsAgain, ops2,
  live: Number(fake.fake_events_live()),
}));
`;

function runChild(code: string, lib: string, env: Record<string, string> = {}) {
  const r = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code, lib],
    env,
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const out = new TextDecoder().decode(r.stdout), err = new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 0, out + err);
  return { out, err };
}

interface ChildRow {
  name: string;
  kind: string;
  count: number;
  share: number;
  flops: number;
  tflops: number | null;
}

Deno.test(
  "`startProfile()`/`stopProfile()` give one row per op name with its count against the fake driver",
  {
    ignore: !HAS_GCC,
  },
  () => {
    const tmp = Deno.makeTempDirSync({ prefix: "tune_profile_" });
    try {
      const { out } = runChild(CHILD, buildFakeDriver(tmp));
      const res = JSON.parse(out.trim().split("\n").at(-1)!);
      const rows = res.rows as ChildRow[];
      const counts = Object.fromEntries(rows.map((r) => [r.name, r.count]));
      // cuBLASLt's column-major shapes: forward (N, M, K), dinp (K, M, N), dweight (K, N, M)
      assert.deepEqual(counts, {
        "gemm 32x8x16 bf16->bf16 TN (fwd)": 2,
        "gemm 16x8x32 bf16->bf16 NN (bwd dinp)": 1,
        "gemm 16x32x8 bf16->f32 NT (bwd dweight)": 1,
        "cast_copy (gemm operand f32->bf16)": 3, // the f32 weight, for each bf16 product
        "ew_add": 3,
        "memset (fill)": 1,
        "memcpy DtoD (copy)": 1,
        "reduce_partial": 1,
        "reduce_final": 1,
      });
      for (const r of rows) {
        if (r.name.startsWith("gemm")) {
          assert.equal(r.kind, "gemm");
          assert.equal(r.flops, 2 * 8 * 16 * 32 * r.count, r.name);
          assert.equal(typeof r.tflops, "number");
        } else {
          assert.equal(r.flops, 0);
          assert.equal(r.tflops, null);
        }
      }
      assert.equal(rows.find((r) => r.name === "memset (fill)")!.kind, "memset");
      assert.equal(rows.find((r) => r.name === "memcpy DtoD (copy)")!.kind, "memcpy");
      const total = rows.reduce((a, r) => a + r.count, 0);
      assert.equal(res.report.ops, total);
      assert.equal(res.report.newDeviceBytes, 0); // the unprofiled run warmed the allocator
      assert.ok(Math.abs(rows.reduce((a, r) => a + r.share, 0) - 1) < 1e-9);
      const waits = Object.fromEntries(
        (res.report.hostWaits as { name: string; count: number }[]).map((w) => [w.name, w.count]),
      );
      assert.deepEqual(waits, {
        "upload (synchronous HtoD)": 1,
        "sum": 1,
        "sync()": 1,
        "stopProfile (resolve events)": 1,
      });
      // two events per op while profiling, none otherwise; the pool is reused, then freed
      assert.equal(res.unprofiled, 0);
      assert.equal(res.records, 2 * total);
      assert.equal(res.creates, 2 * total);
      assert.equal(res.createsAgain, res.creates);
      assert.equal(res.ops2, total);
      assert.equal(res.live, 0);
    } finally {
      Deno.removeSync(tmp, { recursive: true });
    }
  },
);

Deno.test("TUNE_CUDA_PROFILE=1 prints the profile table to stderr when the backend is destroyed", {
  ignore: !HAS_GCC,
}, () => {
  const tmp = Deno.makeTempDirSync({ prefix: "tune_profile_" });
  try {
    const code = `
      const lib = Deno.args[0];
      Deno.env.set("TUNE_LIBCUDA", lib);
      Deno.env.set("TUNE_LIBCUBLASLT", lib);
      const { createCudaBackend } = await import("${ROOT}src/backend/cuda/backend.ts");
      const be = createCudaBackend();
      const a = be.alloc(100, "bf16");
      be.add(a, a, a);
      be.add(a, a, a);
      be.destroy();
    `;
    const { err } = runChild(code, buildFakeDriver(tmp), { TUNE_CUDA_PROFILE: "1" });
    assert.match(err, /# TUNE_CUDA_PROFILE \(Fake GPU 0\)/);
    assert.match(err, /^wall .* ms; GPU busy .*; 2 ops$/m); // alloc's memset is untimed
    assert.match(err, /^ew_add\s+kernel\s+2\s/m);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("gpu_bench.ts --tiny --profile --json prints the step's profile on the fake driver", {
  ignore: !HAS_GCC,
}, () => {
  const tmp = Deno.makeTempDirSync({ prefix: "tune_profile_" });
  try {
    const lib = buildFakeDriver(tmp);
    const r = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../scripts/gpu_bench.ts", import.meta.url).pathname,
        "--tiny",
        "--profile",
        "--json",
        "--no-torch",
        "--modes=full",
        "--max-batch=2",
        "--steps=1",
      ],
      env: { TUNE_LIBCUDA: lib, TUNE_LIBCUBLASLT: lib },
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    const out = new TextDecoder().decode(r.stdout), err = new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 0, out + err);
    assert.match(err, /# full: per-op GPU profile of one step at batch 2 \(seq 32\)/);
    assert.match(err, /^op\s+kind\s+count\s+total ms\s+share %\s+avg us\s+TFLOP\/s$/m);
    const line = out.split("\n").find((l) => l.startsWith('{"profile":'));
    assert.ok(line, out);
    const p = JSON.parse(line);
    assert.equal(p.profile, "full");
    assert.equal(p.batch, 2);
    assert.equal(p.new_device_bytes, 0); // no cuMemAlloc in a step after the warm-up
    const count = (name: string) =>
      (p.rows as ChildRow[]).find((row) => row.name === name)?.count ?? 0;
    // one step of the tiny model (2 layers, tied embeddings): one of each per step ...
    for (const k of ["embedding_fwd", "embedding_bwd", "cross_entropy", "adamw"]) {
      assert.equal(count(k), 1, k);
    }
    // ... and per layer (2) plus the final norm
    assert.equal(count("rmsnorm_fwd"), 5);
    assert.equal(count("rmsnorm dweight partial"), 5);
    // the output projection (V=256, C=64, N=64) with the tied f32 embedding cast to bf16
    assert.equal(count("gemm 256x64x64 bf16->bf16 TN (fwd)"), 1);
    assert.ok(count("cast_copy (gemm operand f32->bf16)") > 0);
    const waits = new Set((p.host_waits as { name: string }[]).map((w) => w.name));
    for (const w of ["sync()", "sum"]) {
      assert.ok(waits.has(w), `${w} in ${[...waits]}`);
    }
    // the model hands its host copies of the ids over, so nothing downloads them mid-step
    assert.ok(![...waits].some((w) => w.startsWith("ids to host")), `${[...waits]}`);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("gpu_bench.ts --cpu-dry-run --profile notes that the profiler is CUDA-only", () => {
  const r = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../scripts/gpu_bench.ts", import.meta.url).pathname,
      "--cpu-dry-run",
      "--profile",
      "--no-torch",
      "--modes=full",
      "--max-batch=1",
      "--steps=1",
    ],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const out = new TextDecoder().decode(r.stdout), err = new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 0, out + err);
  assert.match(err, /--profile: the per-op profiler is CUDA-only/);
  assert.match(out, /^full\s+tune\s+1\s+\d+/m);
});
