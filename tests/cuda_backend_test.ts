/**
 * CUDA backend pieces that run without a GPU: the one-line error when the driver is
 * missing, launch-argument packing, host bf16 conversion, allocator size classes and the
 * library search. The GPU parity checks live in scripts/gpu_check.ts.
 */
import assert from "node:assert/strict";
import { TuneError } from "../src/errors.ts";
import { packArgs } from "../ffi/cuda.ts";
import { LIBCUBLASLT, openLibrary, sitePackagesDirs } from "../ffi/library_path.ts";
import { decodeBf16, encodeBf16, f32ToBf16Bits } from "../src/backend/cuda/bf16.ts";
import { sizeClass } from "../src/backend/cuda/allocator.ts";
import { roundBf16 } from "../src/backend/cpu/buffer.ts";

function driverPresent(): boolean {
  try {
    Deno.dlopen("libcuda.so.1", {}).close();
    return true;
  } catch {
    return false;
  }
}

const NO_DRIVER = !driverPresent() && Deno.env.get("TUNE_LIBCUDA") === undefined;

Deno.test("createCudaBackend() throws one-line TuneError naming libcuda when no driver", {
  ignore: !NO_DRIVER,
}, async () => {
  const { createCudaBackend } = await import("../src/backend/cuda/backend.ts");
  let err: unknown = null;
  try {
    createCudaBackend();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof TuneError, `expected TuneError, got ${err}`);
  const msg = (err as Error).message;
  assert.equal(msg.split("\n").length, 1, `not one line: ${msg}`);
  assert.match(msg, /^libcuda\.so\.1 not found/);
  assert.match(msg, /TUNE_LIBCUDA/);
  assert.match(msg, /device=cpu/);
});

Deno.test('createBackend("cuda") passes the one-line TuneError through when no driver', {
  ignore: !NO_DRIVER,
}, async () => {
  const { createBackend } = await import("../src/backend/select.ts");
  await assert.rejects(() => createBackend("cuda"), (e: unknown) => {
    assert.ok(e instanceof TuneError);
    assert.match((e as Error).message, /^libcuda\.so\.1 not found[^\n]*$/);
    return true;
  });
});

Deno.test("openLibrary() names the override variable when TUNE_LIBCUDA points nowhere", () => {
  // In a child process: setting the variable here would leak into tests running beside.
  const lib = new URL("../ffi/library_path.ts", import.meta.url).href;
  const code = `import { LIBCUDA, openLibrary } from "${lib}";
    try { openLibrary(LIBCUDA, {}); } catch (e) { console.log(e.name + ": " + e.message); }`;
  const r = new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { TUNE_LIBCUDA: "/nonexistent/libcuda.so.1" },
    stdout: "piped",
  }).outputSync();
  const out = new TextDecoder().decode(r.stdout).trim();
  assert.match(out, /^TuneError: TUNE_LIBCUDA=\/nonexistent\/libcuda\.so\.1 could not be opened/);
  assert.equal(out.split("\n").length, 1, out);
});

Deno.test("openLibrary() finds cuBLASLt or reports it in one line", () => {
  // Works either way: on a CUDA machine it opens (and says from where), elsewhere the
  // error is the one-line TuneError. sitePackagesDirs() must not throw on any machine.
  assert.ok(Array.isArray(sitePackagesDirs()));
  try {
    const { lib, path } = openLibrary(LIBCUBLASLT, {});
    assert.ok(path.includes("libcublasLt"));
    lib.close();
  } catch (e) {
    assert.ok(e instanceof TuneError, String(e));
    assert.match((e as Error).message, /^libcublasLt\.so not found[^\n]*TUNE_LIBCUBLASLT/);
  }
});

Deno.test("packArgs() lays arguments out at natural alignment without tail padding", () => {
  const view = new DataView(new ArrayBuffer(64));
  // (ptr, int, ptr, float, int): 0..8, 8..12, pad to 16, 16..24, 24..28, 28..32
  const size = packArgs(view, "pipfi", [0x1122334455667788n, -3, 42n, 1.5, 7]);
  assert.equal(size, 32);
  assert.equal(view.getBigUint64(0, true), 0x1122334455667788n);
  assert.equal(view.getInt32(8, true), -3);
  assert.equal(view.getBigUint64(16, true), 42n);
  assert.equal(view.getFloat32(24, true), 1.5);
  assert.equal(view.getInt32(28, true), 7);
  // (ptr, int) ends at 12: no padding to 16 (the driver rejects a padded size).
  assert.equal(packArgs(view, "pi", [1n, 2]), 12);
  // An unsigned 32-bit value given as a number wraps to the same bits.
  packArgs(view, "i", [0xfedcba98]);
  assert.equal(view.getUint32(0, true), 0xfedcba98);
  assert.throws(() => packArgs(view, "pp", [1n]));
});

Deno.test("encodeBf16() rounds like the CPU backend's roundBf16 (ties to even, NaN, Inf)", () => {
  const xs = new Float32Array([
    0,
    -0,
    1,
    1.00390625, // exactly halfway between two bf16 values: ties to even (1.0)
    1.01171875, // halfway, rounds up to the even neighbour 1.015625
    3.14159,
    -2.71828,
    1e-40,
    3.4e38,
    Infinity,
    -Infinity,
    NaN,
  ]);
  const rnd = new Float32Array(4096);
  let s = 12345;
  for (let i = 0; i < rnd.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    rnd[i] = ((s / 4294967296) - 0.5) * Math.pow(2, (i % 40) - 20);
  }
  for (const arr of [xs, rnd]) {
    const bits = new Uint16Array(arr.length);
    encodeBf16(bits, arr);
    const back = new Float32Array(arr.length);
    decodeBf16(back, bits);
    for (let i = 0; i < arr.length; i++) {
      const want = roundBf16(arr[i]);
      if (Number.isNaN(want)) assert.ok(Number.isNaN(back[i]), `NaN at ${i}`);
      else assert.equal(back[i], want, `element ${i}: ${arr[i]}`);
      assert.equal(bits[i], f32ToBf16Bits(arr[i]), `bits ${i}`);
    }
  }
});

Deno.test("sizeClass() rounds up, stays within 25% above 4 KiB, and is 256-byte aligned", () => {
  for (const n of [1, 511, 512, 513, 4096, 4097, 5000, 1 << 20, (1 << 20) + 1, 123456789]) {
    const c = sizeClass(n);
    assert.ok(c >= n, `${n} -> ${c}`);
    assert.equal(c % 256, 0, `${n} -> ${c}`);
    if (n > 4096) assert.ok(c <= n * 1.25 + 1, `${n} -> ${c}`);
  }
  assert.equal(sizeClass(5000), sizeClass(5100)); // neighbours share a class
});

Deno.test("installedCandidates() finds cuBLASLt/NCCL in CUDA 12 and 13 wheel layouts of a venv on PATH", () => {
  const tmp = Deno.makeTempDirSync({ prefix: "tune_libpath_" });
  try {
    const sp = `${tmp}/venv/lib/python3.12/site-packages/nvidia`;
    const files = [
      `${sp}/cu13/lib/libcublasLt.so.13`, // CUDA 13 wheels: one nvidia/cu13/lib folder
      `${sp}/cublas/lib/libcublasLt.so.12`, // CUDA 12 wheels: one folder per library
      `${sp}/nccl/lib/libnccl.so.2`,
    ];
    for (const f of files) {
      Deno.mkdirSync(f.slice(0, f.lastIndexOf("/")), { recursive: true });
      Deno.writeTextFileSync(f, "");
    }
    Deno.mkdirSync(`${tmp}/venv/bin`);
    const lib = new URL("../ffi/library_path.ts", import.meta.url).href;
    const code = `import { installedCandidates, LIBCUBLASLT, LIBNCCL } from "${lib}";
      console.log(JSON.stringify([installedCandidates(LIBCUBLASLT), installedCandidates(LIBNCCL)]));`;
    const r = new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      env: { PATH: `${tmp}/venv/bin:/usr/bin:/bin`, HOME: tmp },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    assert.ok(r.success, new TextDecoder().decode(r.stderr));
    const [blas, nccl] = JSON.parse(new TextDecoder().decode(r.stdout)) as string[][];
    // The higher soname version comes first.
    assert.deepEqual(blas.filter((p) => p.startsWith(tmp)), [files[0], files[1]]);
    assert.deepEqual(nccl.filter((p) => p.startsWith(tmp)), [files[2]]);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
