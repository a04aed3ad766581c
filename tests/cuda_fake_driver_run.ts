/**
 * Child process of tests/cuda_fake_driver_test.ts: runs the CUDA backend against the fake
 * libcuda/libcuBLASLt built from tests/cuda_fake_driver.c (path in Deno.args[0]).
 * Prints one line per check and exits non-zero on the first failure.
 *
 * What the fake can show: every FFI symbol and signature binds; memory paths (upload,
 * download, views, memset fills, same-dtype copies) move the right bytes; cuBLASLt GEMMs
 * (really computed by the fake) reproduce the CPU backend's matmuls; every kernel launch
 * packs exactly the PTX parameter size, passes only pointers into live allocations and
 * stays within grid/block/shared-memory limits; JIT and lookup errors name call and status.
 * Kernels do not run here (that is scripts/gpu_check.ts on a GPU).
 */
import assert from "node:assert/strict";
import { fakeHooks } from "./_fake_driver.ts";
import type { DeviceBuffer, DType } from "../src/backend/ops.ts";

const libPath = Deno.args[0];
Deno.env.set("TUNE_LIBCUDA", libPath);
Deno.env.set("TUNE_LIBCUBLASLT", libPath);

const { createCudaBackend } = await import("../src/backend/cuda/backend.ts");
const { CpuBackend } = await import("../src/backend/cpu/backend.ts");
const { roundArrayBf16 } = await import("../src/backend/cpu/buffer.ts");
const { CudaModule } = await import("../ffi/cuda.ts");
const errors = await import("../src/errors.ts");

const fake = fakeHooks(libPath);
const violations = fake.violations;

function ok(name: string, fn: () => void): void {
  fn();
  const v = violations();
  assert.equal(v, "", `${name}: the fake driver saw:\n${v}`);
  console.log(`ok  ${name}`);
}

let seed = 7;
function randn(n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    out[i] = seed / 2147483648 - 1;
  }
  return out;
}

const be = createCudaBackend();
const cpu = new CpuBackend();

ok("createCudaBackend() binds every symbol and reads the device", () => {
  assert.equal(be.info.name, "Fake GPU 0");
  assert.deepEqual(be.info.computeCapability, [9, 0]);
  assert.equal(be.info.driverVersion, 12040);
  assert.equal(be.timeMs(() => {}), 1.5);
});

ok("upload/view/download (also into an array)/fill/copy move the right bytes", () => {
  for (const dt of ["f32", "bf16", "i32"] as DType[]) {
    const n = 1000;
    const host = dt === "i32" ? Int32Array.from(randn(n), (x) => Math.round(x * 1e6)) : randn(n);
    const want = host.slice();
    if (dt === "bf16") roundArrayBf16(want as Float32Array, host);
    const b = be.alloc(n, dt);
    assert.deepEqual(be.download(b), dt === "i32" ? new Int32Array(n) : new Float32Array(n));
    be.upload(b, host);
    assert.deepEqual(be.download(b), want, `${dt} round trip`);
    const part = dt === "i32" ? Int32Array.of(5, 6, 7) : Float32Array.of(0.5, 1.5, -2);
    be.upload(b, part, 10);
    want.set(part, 10);
    assert.deepEqual(be.download(be.view(b, 9, 5)), want.slice(9, 14), `${dt} view`);
    if (dt !== "bf16") { // bf16 fill is a kernel (not run by the fake)
      be.fill(be.view(b, 100, 50), dt === "i32" ? -3 : 0.25);
      want.fill(dt === "i32" ? -3 : 0.25, 100, 150);
    }
    const c = be.alloc(n, dt);
    be.copy(c, b);
    assert.deepEqual(be.download(c), want, `${dt} copy`);
    // into a caller's array, at an offset of its memory: the same values, that array returned
    const backing = dt === "i32" ? new Int32Array(n + 3) : new Float32Array(n + 3);
    const into = backing.subarray(3);
    assert.equal(be.download(c, into), into);
    assert.deepEqual(into, want, `${dt} download into`);
    assert.throws(() => be.download(c, backing), /download into a .* of 1003/);
    be.free(b);
    be.free(c);
  }
  assert.equal(be.bytesInUse(), 0);
});

/** A CPU and a fake-GPU buffer holding the same (bf16-rounded when dt = bf16) values. */
function both(host: Float32Array, dt: DType): { c: DeviceBuffer; g: DeviceBuffer } {
  const h = host.slice();
  if (dt === "bf16") roundArrayBf16(h, host);
  const c = cpu.alloc(h.length), g = be.alloc(h.length, dt);
  cpu.upload(c, h);
  be.upload(g, h);
  return { c, g };
}

function close(label: string, got: ArrayLike<number>, want: ArrayLike<number>, dt: DType) {
  const [atol, rtol] = dt === "bf16" ? [1e-2, 0.08] : [1e-5, 1e-4];
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    assert.ok(d <= atol + rtol * Math.abs(want[i]), `${label}[${i}]: ${got[i]} vs ${want[i]}`);
  }
}

ok("matmulForward/Backward/Batched map row-major products onto cuBLASLt correctly", () => {
  for (const dt of ["f32", "bf16"] as DType[]) {
    for (const [M, K, N] of [[5, 7, 3], [1, 16, 9], [12, 33, 20]]) {
      const x = both(randn(M * K), dt), w = both(randn(N * K), dt);
      const o = both(randn(M * N), dt);
      for (const acc of [false, true]) {
        cpu.matmulForward(o.c, x.c, w.c, null, M, K, N, acc);
        be.matmulForward(o.g, x.g, w.g, null, M, K, N, acc);
        close(`${dt} fwd ${M}x${K}x${N} acc=${acc}`, be.download(o.g), cpu.download(o.c), dt);
      }
      const dy = both(randn(M * N), dt), dx = both(randn(M * K), dt);
      const dw = both(randn(N * K), "f32");
      cpu.matmulBackward(dx.c, dw.c, null, dy.c, x.c, w.c, M, K, N);
      be.matmulBackward(dx.g, dw.g, null, dy.g, x.g, w.g, M, K, N);
      close(`${dt} dinp ${M}x${K}x${N}`, be.download(dx.g), cpu.download(dx.c), dt);
      close(`${dt} dweight ${M}x${K}x${N}`, be.download(dw.g), cpu.download(dw.c), dt);
    }
    const batch = 3, M = 4, K = 6, N = 5;
    const x = both(randn(batch * M * K), dt), w = both(randn(batch * N * K), dt);
    const o = both(new Float32Array(batch * M * N), dt);
    be.matmulBatched(o.g, x.g, w.g, batch, M, K, N);
    for (let b = 0; b < batch; b++) {
      cpu.matmulForward(
        cpu.view(o.c, b * M * N, M * N),
        cpu.view(x.c, b * M * K, M * K),
        cpu.view(w.c, b * N * K, N * K),
        null,
        M,
        K,
        N,
      );
    }
    close(`${dt} batched`, be.download(o.g), cpu.download(o.c), dt);
  }
});

ok("every op launches with well-formed arguments", () => {
  fake.fake_reset();
  const dt: DType = "bf16";
  const B = 2, T = 5, NH = 4, NKV = 2, HS = 16, C = NH * HS, V = 11, H = 24, N = B * T;
  const a = (n: number, d: DType = dt) => be.alloc(n, d);
  const x = a(N * C), y = a(N * C), w = a(C), r = a(N, "f32");
  be.add(y, x, y);
  be.mul(y, y, x);
  be.axpy(y, x, 0.5);
  be.scale(y, 2);
  be.sum(x);
  be.sumSquares(x);
  be.dropoutMask(y, 0.1, 3);
  be.fill(y, 1);
  be.copy(a(N * C, "f32"), x);
  const tok = a(N, "i32");
  const table = a(V * C), dtable = a(V * C, "f32");
  be.embeddingForward(x, tok, table, N, C);
  be.embeddingBackward(dtable, x, tok, N, C);
  be.rmsnormForward(y, r, x, w, N, C, 1e-5);
  be.rmsnormBackward(x, a(C, "f32"), y, x, w, r, N, C);
  const cos = a(32 * (HS / 2), "f32"), sin = a(32 * (HS / 2), "f32");
  be.rope(x, cos, sin, B, T, NH, HS, 3, "half", false);
  be.rope(x, cos, sin, B, T, NH, HS, 0, "interleaved", true);
  be.rope(x, cos, sin, B, T, NH, HS, 2, "half", false, null, HS - 2); // partial rotary
  const k = a(B * T * NKV * HS), v = a(B * T * NKV * HS), o = a(N * C), lse = a(B * NH * T, "f32");
  be.attentionForward(o, lse, x, k, v, B, T, T, T, NH, NKV, HS);
  be.attentionBackward(
    a(N * C),
    a(B * T * NKV * HS),
    a(B * T * NKV * HS),
    y,
    x,
    k,
    v,
    o,
    lse,
    B,
    T,
    NH,
    NKV,
    HS,
  );
  const kc = a(B * 16 * NKV * HS);
  be.kvCacheWrite(kc, k, B, T, 16, NKV * HS, 4);
  be.attentionForward(
    a(B * NH * HS),
    a(B * NH, "f32"),
    a(B * NH * HS),
    kc,
    kc,
    B,
    1,
    9,
    16,
    NH,
    NKV,
    HS,
  );
  const g = a(N * H), u = a(N * H), h = a(N * H);
  be.swigluForward(h, g, u, N * H);
  be.swigluBackward(g, u, h, g, u, N * H);
  const logits = a(N * V), tg = a(N, "i32"), losses = a(N, "f32");
  be.crossEntropy(losses, logits, logits, tg, N, V, 0.1);
  be.crossEntropy(losses, null, logits, tg, N, V, 1);
  const bias = a(H), dbias = a(H, "f32"), xin = a(N * C), wt = a(H * C);
  be.matmulForward(h, xin, wt, bias, N, C, H);
  be.matmulBackward(null, null, dbias, h, xin, wt, N, C, H);
  be.matmulForward(a(N * H, "f32"), xin, a(H * C, "f32"), null, N, C, H); // mixed: casts
  const p = a(100, "f32");
  be.adamw(p, a(100), a(100, "f32"), a(100, "f32"), {
    lr: 1e-3,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weightDecay: 0.1,
    step: 1,
  });
  be.sync();
  assert.ok(Number(fake.fake_launch_count()) >= 30, `only ${fake.fake_launch_count()} launches`);
});

ok("bad token ids and targets throw the CPU backend's one-line TuneError", () => {
  const { TuneError } = errors;
  const C = 4, V = 3, N = 2;
  const tok = be.alloc(N, "i32"), table = be.alloc(V * C), out = be.alloc(N * C);
  be.upload(tok, Int32Array.of(1, 3));
  const oneLine = (re: RegExp) => (e: unknown) => {
    assert.ok(e instanceof TuneError, String(e));
    assert.match((e as Error).message, re);
    assert.equal((e as Error).message.split("\n").length, 1);
    return true;
  };
  assert.throws(
    () => be.embeddingForward(out, tok, table, N, C),
    oneLine(/^token id 3 at position 1 is outside the vocabulary 0\.\.2;/),
  );
  assert.throws(() => be.embeddingBackward(table, out, tok, N, C), oneLine(/^token id 3/));
  be.upload(tok, Int32Array.of(-100, -5));
  assert.throws(
    () => be.crossEntropy(be.alloc(N, "f32"), null, be.alloc(N * V), tok, N, V, 1),
    oneLine(/^target id -5 at row 1 is outside 0\.\.2 \(or -100 to ignore\)/),
  );
});

ok("JIT and lookup errors name the call, the status and the log", () => {
  assert.throws(() => CudaModule.load("broken", "FAKE_JIT_ERROR .version 8.0"), (e: unknown) => {
    const m = (e as Error).message;
    assert.match(m, /^cuModuleLoadDataEx\(broken\) failed: CUDA_ERROR_INVALID_PTX/);
    assert.match(m, /JIT log:\nptxas fatal {3}: fake syntax error/);
    return true;
  });
  const mod = CudaModule.load("tiny", "//\n.version 8.0\n.visible .entry k(\n.param .u64 a\n)\n{}");
  assert.ok(mod.fn("k") !== null);
  assert.throws(
    () => mod.fn("missing"),
    /cuModuleGetFunction\(tiny\.missing\) failed: CUDA_ERROR_NOT_FOUND/,
  );
});

ok("destroy() releases the handle, the stream and the cached blocks", () => {
  const before = be.bytesReserved();
  be.destroy();
  // The 32 MiB workspace and every cached block go back; live buffers stay.
  assert.ok(before - be.bytesReserved() >= 32 * 2 ** 20, `${before} -> ${be.bytesReserved()}`);
});

console.log("all fake-driver checks passed");
