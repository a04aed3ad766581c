/**
 * One rank of the collectives test: runs every collective on CPU buffers with inputs that
 * every rank can regenerate, checks each result bitwise against a sequential rank-order
 * fp32 sum computed locally, and prints one JSON line with a hash of every result so the
 * test can compare ranks. Exits 1 with the reason on any mismatch.
 */
import { CpuBackend } from "../../src/backend/cpu/backend.ts";
import { CpuBuffer } from "../../src/backend/cpu/buffer.ts";
import type { DeviceBuffer } from "../../src/backend/ops.ts";
import { backendHostAccess, viewHostAccess } from "../../src/distributed/host_access.ts";
import { initProcessGroup } from "../../src/distributed/process_group.ts";

/** Inputs of rank r: values of widely varying magnitude so that summation order matters. */
function input(r: number, n: number, salt: number): Float32Array {
  let s = (r + 1) * 7919 + salt * 104729;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const u = s / 4294967296;
    out[i] = (u - 0.5) * Math.pow(10, (s % 7) - 3);
  }
  return out;
}

/** Sequential fp32 sum over ranks 0..W-1 of input(r). */
function expectedSum(W: number, n: number, salt: number): Float32Array {
  const acc = input(0, n, salt);
  for (let r = 1; r < W; r++) {
    const x = input(r, n, salt);
    for (let i = 0; i < n; i++) acc[i] += x[i];
  }
  return acc;
}

function hash(a: Float32Array | Int32Array): string {
  const b = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 16777619) >>> 0;
  return h.toString(16);
}

function sameBits(label: string, got: Float32Array | Int32Array, want: Float32Array | Int32Array) {
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  if (g.length !== w.length) throw new Error(`${label}: length ${g.length} != ${w.length}`);
  for (let i = 0; i < g.length; i++) {
    if (g[i] !== w[i]) throw new Error(`${label}: element ${i} is ${got[i]}, want ${want[i]}`);
  }
}

try {
  const group = await initProcessGroup();
  // The CPU backend's buffers, reached in place (CpuBuffer.data).
  const backend = new CpuBackend({
    collectives: group.cpuCollectives(viewHostAccess((b) => (b as CpuBuffer).data)),
  });
  const coll = backend.collectives;
  const f32 = (a: Float32Array) => {
    const b = backend.alloc(a.length);
    backend.upload(b, a);
    return b;
  };
  const data = (b: DeviceBuffer) => backend.download(b);
  const W = group.worldSize, me = group.rank;
  const hashes: Record<string, string> = {};

  // allReduceSum: a length not divisible by W, a tiny one, and one big enough to need many
  // TCP reads (4 MiB).
  for (const [n, salt] of [[10007, 1], [2, 2], [1 << 20, 3], [0, 4]]) {
    const buf = f32(input(me, n, salt));
    await coll.allReduceSum(buf);
    sameBits(`allReduceSum n=${n}`, data(buf), expectedSum(W, n, salt));
    hashes[`allReduceSum${n}`] = hash(data(buf));
  }

  // The check above can tell summation orders apart: with 3+ ranks the reverse order
  // rounds differently somewhere (with 2, a + b = b + a exactly).
  if (W >= 3) {
    const fwd = expectedSum(W, 10007, 1);
    const rev = input(W - 1, 10007, 1);
    for (let r = W - 2; r >= 0; r--) {
      const x = input(r, 10007, 1);
      for (let i = 0; i < rev.length; i++) rev[i] += x[i];
    }
    if (fwd.every((v, i) => Object.is(v, rev[i]))) throw new Error("inputs do not test order");
  }

  // allReduceSum on a view: only the viewed slice changes.
  const parent = f32(input(me, 300, 5));
  await coll.allReduceSum(backend.view(parent, 100, 100));
  const whole = data(parent);
  sameBits(
    "allReduceSum view",
    whole.subarray(100, 200),
    expectedSum(W, 300, 5).subarray(100, 200),
  );
  sameBits("allReduceSum outside view", whole.subarray(0, 100), input(me, 300, 5).subarray(0, 100));
  hashes.view = hash(data(parent).subarray(100, 200));

  // bf16 buffers: the rank-order fp32 sum, rounded once to bf16 (the CPU backend's rounding).
  const bfIn = input(me, 999, 13);
  const bf = backend.alloc(999, "bf16");
  backend.upload(bf, bfIn); // rounds each rank's input to bf16
  await coll.allReduceSum(bf);
  const wantBf = new Float32Array(999);
  for (let r = 0; r < W; r++) {
    const x = backend.alloc(999, "bf16");
    backend.upload(x, input(r, 999, 13));
    const xs = data(x);
    for (let i = 0; i < 999; i++) wantBf[i] += xs[i];
  }
  const roundedWant = backend.alloc(999, "bf16");
  backend.upload(roundedWant, wantBf);
  sameBits("allReduceSum bf16", data(bf), data(roundedWant));
  hashes.bf16 = hash(data(bf));

  // i32 sums wrap like int32.
  const intBuf = backend.alloc(4, "i32");
  backend.upload(intBuf, new Int32Array([me + 1, -7 * me, 2147483647, me]));
  await coll.allReduceSum(intBuf);
  const ints = data(intBuf);
  const wantInts = new Int32Array(4);
  for (let r = 0; r < W; r++) {
    const x = [r + 1, -7 * r, 2147483647, r];
    for (let i = 0; i < 4; i++) wantInts[i] = (wantInts[i] + x[i]) | 0;
  }
  sameBits("allReduceSum i32", ints, wantInts);

  // reduceScatterSum gives exactly this rank's slice of the all-reduce.
  const n = 4099;
  const rsOut = f32(new Float32Array(n));
  await coll.reduceScatterSum(rsOut, f32(input(me, W * n, 6)));
  sameBits(
    "reduceScatterSum",
    data(rsOut),
    expectedSum(W, W * n, 6).subarray(me * n, (me + 1) * n),
  );
  hashes[`reduceScatter${me}`] = hash(data(rsOut));

  // allGather: the concatenation in rank order.
  const agOut = f32(new Float32Array(W * 1001));
  await coll.allGather(agOut, f32(input(me, 1001, 7)));
  const wantAg = new Float32Array(W * 1001);
  for (let r = 0; r < W; r++) wantAg.set(input(r, 1001, 7), r * 1001);
  sameBits("allGather", data(agOut), wantAg);
  hashes.allGather = hash(data(agOut));

  // broadcast from every root in turn.
  for (let root = 0; root < W; root++) {
    const b = f32(input(me, 513, 8));
    await coll.broadcast(b, root);
    sameBits(`broadcast root=${root}`, data(b), input(root, 513, 8));
    hashes[`broadcast${root}`] = hash(data(b));
  }

  // barrier, several times; then collectives issued without awaiting run in call order.
  for (let i = 0; i < 3; i++) await coll.barrier();
  const a = f32(input(me, 64, 9)), b = f32(input(me, 64, 10));
  await Promise.all([coll.allReduceSum(a), coll.allReduceSum(b), coll.barrier()]);
  sameBits("queued allReduceSum a", data(a), expectedSum(W, 64, 9));
  sameBits("queued allReduceSum b", data(b), expectedSum(W, 64, 10));

  // The same through any backend's download/upload (one host copy each way).
  let other: CpuBackend | null = null;
  other = new CpuBackend({ collectives: group.cpuCollectives(backendHostAccess(() => other!)) });
  const viaCopy = other.alloc(777);
  other.upload(viaCopy, input(me, 777, 11));
  await other.collectives.allReduceSum(viaCopy);
  sameBits("allReduceSum via download/upload", other.download(viaCopy), expectedSum(W, 777, 11));
  const gathered = other.alloc(W * 5);
  const part = other.alloc(5);
  other.upload(part, input(me, 5, 12));
  await other.collectives.allGather(gathered, part);
  sameBits(
    "allGather via download/upload",
    other.download(gathered).subarray(me * 5, me * 5 + 5),
    input(me, 5, 12),
  );

  await group.close();
  console.log(JSON.stringify({ rank: me, worldSize: W, hashes }));
} catch (e) {
  console.error(`rank ${Deno.env.get("RANK")} failed: ${(e as Error).message}`);
  Deno.exit(1);
}
