/**
 * `Collectives` between processes over TCP (the CPU path; also usable as a slow fallback
 * on any backend through `download`/`upload`).
 *
 * Design: direct exchange over the full mesh, the owner-computes scheme. For a sum, the
 * buffer is cut into `worldSize` chunks; rank c receives chunk c from every rank and adds
 * the contributions in rank order 0, 1, ..., W-1 (fp32 rounding after each add, exactly
 * like a sequential loop over ranks); then every rank receives every summed chunk. Each
 * element is summed once, by one rank, in a fixed order, so results are deterministic and
 * bitwise identical on all ranks, and `reduceScatterSum` gives exactly the slice that
 * `allReduceSum` would. Traffic per rank is 2(W-1)/W of the buffer, as for a ring, in two
 * rounds instead of 2(W-1).
 */
import type { Collectives, DeviceBuffer } from "../backend/ops.ts";
import type { HostAccess } from "./host_access.ts";
import { nameOp, type PeerMesh } from "./mesh.ts";

const OP_ALLREDUCE_SCATTER = 1;
const OP_ALLREDUCE_GATHER = 2;
const OP_REDUCE_SCATTER = 3;
const OP_ALL_GATHER = 4;
const OP_BROADCAST = 5;
const OP_BARRIER = 6;
nameOp(OP_ALLREDUCE_SCATTER, "allReduceSum");
nameOp(OP_ALLREDUCE_GATHER, "allReduceSum (second round)");
nameOp(OP_REDUCE_SCATTER, "reduceScatterSum");
nameOp(OP_ALL_GATHER, "allGather");
nameOp(OP_BROADCAST, "broadcast");
nameOp(OP_BARRIER, "barrier");

type Elems = Float32Array | Int32Array;

function bytes(a: Elems): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function elems(like: Elems, b: Uint8Array): Elems {
  return like instanceof Float32Array
    ? new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4)
    : new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

/** out = sum over r of parts[r], added in rank order (out must not alias parts[0]). */
function sumInRankOrder(out: Elems, parts: Elems[]): void {
  out.set(parts[0]);
  const n = out.length;
  for (let r = 1; r < parts.length; r++) {
    const p = parts[r];
    if (out instanceof Int32Array) { for (let i = 0; i < n; i++) out[i] = (out[i] + p[i]) | 0; }
    else for (let i = 0; i < n; i++) out[i] += p[i];
  }
}

/**
 * Round fp32 values to bfloat16 (nearest, ties to even) in place: the sum of bf16 buffers
 * is rounded once, by the rank that owns the chunk, so every rank stores the same bf16.
 */
function roundBf16InPlace(a: Elems): void {
  const u = new Uint32Array(a.buffer, a.byteOffset, a.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    if ((x & 0x7f800000) === 0x7f800000) {
      u[i] = (x & 0x7fffff) !== 0 ? (x | 0x400000) & 0xffff0000 : x & 0xffff0000; // NaN, Inf
    } else {
      u[i] = ((x + 0x7fff + ((x >>> 16) & 1)) & 0xffff0000) >>> 0;
    }
  }
}

/**
 * The sum over ranks of one chunk: this rank's `mine` and the others' received bytes `got`
 * (rank order), rounded to bf16 when the buffer holds bf16 values.
 */
function sumChunks(mine: Elems, got: (Uint8Array | null)[], me: number, bf16: boolean): Elems {
  const summed = mine instanceof Float32Array
    ? new Float32Array(mine.length)
    : new Int32Array(mine.length);
  sumInRankOrder(summed, got.map((g, r) => (r === me ? mine : elems(mine, g!))));
  if (bf16) roundBf16InPlace(summed);
  return summed;
}

/** Throw unless the `whole` buffer of `op` holds `W` parts of `n` elements. */
function checkParts(op: string, what: string, whole: DeviceBuffer, W: number, n: number): void {
  if (whole.length !== W * n) {
    throw new Error(`${op}: ${what} has ${whole.length} elements, want ${W} * ${n}`);
  }
}

/** Start of chunk c when `n` elements are cut into `w` near-equal chunks. */
function chunkStart(c: number, n: number, w: number): number {
  return Math.floor((c * n) / w);
}

/** Collectives over a `PeerMesh`; calls run one at a time in the order they are made. */
export class TcpCollectives implements Collectives {
  constructor(private readonly mesh: PeerMesh, private readonly access: HostAccess) {}

  get rank(): number {
    return this.mesh.rank;
  }

  get worldSize(): number {
    return this.mesh.worldSize;
  }

  /** buf = sum over ranks of buf (bitwise identical on every rank). */
  allReduceSum(buf: DeviceBuffer): Promise<void> {
    return this.#run(async (seq, W, me) => {
      const data = this.access.read(buf);
      const n = data.length;
      const chunk = (c: number) => data.subarray(chunkStart(c, n, W), chunkStart(c + 1, n, W));
      const mine = chunk(me);
      const got = await this.mesh.exchange(seq, {
        op: OP_ALLREDUCE_SCATTER,
        name: "allReduceSum",
        send: Array.from({ length: W }, (_, c) => bytes(chunk(c))),
        expect: Array.from({ length: W }, () => mine.byteLength),
      });
      const summed = sumChunks(mine, got, me, buf.dtype === "bf16");
      const all = await this.mesh.exchange(seq, {
        op: OP_ALLREDUCE_GATHER,
        name: "allReduceSum",
        send: Array.from({ length: W }, () => bytes(summed)),
        expect: Array.from({ length: W }, (_, c) => chunk(c).byteLength),
      });
      for (let c = 0; c < W; c++) chunk(c).set(c === me ? summed : elems(data, all[c]!));
      this.access.write(buf, data);
    });
  }

  /** out(n) = slice `rank` of the sum over ranks of inp(W * n). */
  reduceScatterSum(out: DeviceBuffer, inp: DeviceBuffer): Promise<void> {
    return this.#run(async (seq, W, me) => {
      const n = out.length;
      checkParts("reduceScatterSum", "inp", inp, W, n);
      const data = this.access.read(inp);
      const chunk = (c: number) => data.subarray(c * n, (c + 1) * n);
      const got = await this.mesh.exchange(seq, {
        op: OP_REDUCE_SCATTER,
        name: "reduceScatterSum",
        send: Array.from({ length: W }, (_, c) => bytes(chunk(c))),
        expect: Array.from({ length: W }, () => n * 4),
      });
      this.access.write(out, sumChunks(chunk(me), got, me, out.dtype === "bf16"));
    });
  }

  /** out(W * n) = concatenation over ranks of inp(n). */
  allGather(out: DeviceBuffer, inp: DeviceBuffer): Promise<void> {
    return this.#run(async (seq, W, me) => {
      const n = inp.length;
      checkParts("allGather", "out", out, W, n);
      const mine = this.access.read(inp);
      const got = await this.mesh.exchange(seq, {
        op: OP_ALL_GATHER,
        name: "allGather",
        send: Array.from({ length: W }, () => bytes(mine)),
        expect: Array.from({ length: W }, () => n * 4),
      });
      const all = mine instanceof Float32Array ? new Float32Array(W * n) : new Int32Array(W * n);
      for (let r = 0; r < W; r++) all.set(r === me ? mine : elems(mine, got[r]!), r * n);
      this.access.write(out, all);
    });
  }

  /** buf = buf of rank `root`. */
  broadcast(buf: DeviceBuffer, root: number): Promise<void> {
    return this.#run(async (seq, W, me) => {
      if (!(root >= 0 && root < W)) throw new Error(`broadcast: root ${root} is not a rank`);
      const data = this.access.read(buf);
      const got = await this.mesh.exchange(seq, {
        op: OP_BROADCAST,
        name: "broadcast",
        send: Array.from({ length: W }, () => (me === root ? bytes(data) : null)),
        expect: Array.from(
          { length: W },
          (_, r) => (me !== root && r === root ? data.byteLength : -1),
        ),
      });
      if (me !== root) {
        data.set(elems(data, got[root]!));
        this.access.write(buf, data);
      }
    });
  }

  /** Returns once every rank has called `barrier`. */
  barrier(): Promise<void> {
    return this.#run(async (seq, W) => {
      const empty = new Uint8Array(0);
      await this.mesh.exchange(seq, {
        op: OP_BARRIER,
        name: "barrier",
        send: Array.from({ length: W }, () => empty),
        expect: Array.from({ length: W }, () => 0),
      });
    });
  }

  /** Run `body` after the calls before it, with its sequence number, the world size and this rank. */
  #run(body: (seq: number, W: number, me: number) => Promise<void>): Promise<void> {
    return this.mesh.serial((seq) => body(seq, this.worldSize, this.rank));
  }
}
