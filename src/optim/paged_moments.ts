/**
 * The fp32 AdamW moments of bitsandbytes' PagedAdamW / PagedAdamW32bit on a GPU backend: both
 * moments live in page-locked host memory, and a step pages them through a small device
 * staging area one page at a time, running the same `adamw` kernel on each page as AdamW runs
 * on the whole buffer. AdamW is elementwise, so the update is AdamW's bit for bit, while the
 * device holds two staging pages of each moment (4 x `pageFloats` floats) instead of 8 bytes
 * per parameter (a model whose moments fit one page: that page, AdamW's 8 bytes).
 *
 * bitsandbytes pages its state with CUDA unified memory (the driver moves pages on demand
 * when the GPU runs short); tune copies explicitly, on the activation offloader's side stream
 * (src/backend/offload.ts has the ordering contract), with two staging sets used in turn so
 * that one page's copies overlap the neighbouring page's update. A page is `pageFloats`
 * consecutive elements of the flat trainable layout; a range that covers part of a page (a
 * layout group under optimizer_in_bwd) pages the whole page and updates only its part.
 * Memory is allocated on first use, so a refusal after construction costs nothing.
 */
import type { ActivationOffloader, CopyEvent, HostBuffer } from "../backend/offload.ts";
import { packedBytes } from "../backend/offload.ts";
import type { Backend, DeviceBuffer } from "../backend/ops.ts";

/** Elements per page: 4M floats, 16 MiB of each moment. */
export const PAGE_FLOATS = 1 << 22;

/** One staging set: the device pages of m and v, and the events of its copies. */
interface Staging {
  m: DeviceBuffer; // (page)
  v: DeviceBuffer; // (page)
  paged: CopyEvent; // the copies in have landed
  written: CopyEvent; // the copies out have landed
}

/** AdamW's two moments over `length` elements, paged from host memory. */
export class PagedMoments {
  readonly #be: Backend;
  readonly #newOffloader: () => ActivationOffloader;
  readonly #page: number;
  #off: ActivationOffloader | null = null;
  #hosts: HostBuffer[] = []; // per page: its m, then its v (packed as the offloader packs)
  #sets: Staging[] = [];
  #turn = 0;

  constructor(
    be: Backend,
    newOffloader: () => ActivationOffloader,
    readonly length: number,
    pageFloats = PAGE_FLOATS,
  ) {
    if (!(length > 0) || !(pageFloats > 0)) throw new Error("PagedMoments: empty");
    this.#be = be;
    this.#newOffloader = newOffloader;
    this.#page = Math.min(pageFloats, length);
  }

  /** Pages of the layout. */
  get pages(): number {
    return Math.ceil(this.length / this.#page);
  }

  /** Page-locked host bytes of both moments (held from the first step on). */
  get hostBytes(): number {
    let n = 0;
    for (let p = 0; p < this.pages; p++) n += this.#hostPageBytes(p);
    return n;
  }

  /** Staging sets: two used in turn, one when a single page holds everything. */
  get #setCount(): number {
    return Math.min(2, this.pages);
  }

  /** Device bytes of the staging sets (held from the first step on). */
  get deviceBytes(): number {
    return this.#setCount * 2 * this.#page * 4;
  }

  /**
   * Run `fn` on the moments of elements [lo, lo + n), a page's share at a time: `m` and `v`
   * are device views (len) of elements [at, at + len). The moments start at zero.
   */
  update(
    lo: number,
    n: number,
    fn: (m: DeviceBuffer, v: DeviceBuffer, at: number, len: number) => void,
  ): void {
    if (!(lo >= 0 && n >= 0 && lo + n <= this.length)) {
      throw new Error(`PagedMoments: range [${lo}, ${lo + n}) outside ${this.length}`);
    }
    if (n === 0) return;
    const off = this.#ready();
    const be = this.#be, P = this.#page;
    for (let p = Math.floor(lo / P); p * P < lo + n; p++) {
      const s = this.#sets[this.#turn];
      this.#turn = (this.#turn + 1) % this.#sets.length;
      const [m, v] = this.#views(s, p);
      off.toDevice(this.#hosts[p], [m, v], s.paged);
      off.waitFor(s.paged);
      const a = Math.max(lo, p * P), b = Math.min(lo + n, (p + 1) * P);
      fn(be.view(m, a - p * P, b - a), be.view(v, a - p * P, b - a), a, b - a);
      // the set's next copy in queues behind this copy out on the side stream, and compute
      // writes the set again only after waiting for that copy in
      off.toHost([m, v], this.#hosts[p], s.written);
    }
  }

  /** Both moments (length) on the host, for a checkpoint. */
  exportMoments(): { m: Float32Array; v: Float32Array } {
    const m = new Float32Array(this.length), v = new Float32Array(this.length);
    this.#eachPage((mh, vh, at) => {
      m.set(mh, at);
      v.set(vh, at);
    });
    return { m, v };
  }

  /** Replace both moments (length each) with saved ones. */
  importMoments(m: Float32Array, v: Float32Array): void {
    if (m.length !== this.length || v.length !== this.length) {
      throw new Error(`PagedMoments: ${m.length}/${v.length} values for ${this.length}`);
    }
    this.#eachPage((mh, vh, at, len) => {
      mh.set(m.subarray(at, at + len));
      vh.set(v.subarray(at, at + len));
    });
  }

  /** fn on each page's host m and v (len floats at element `at`), once no copy is in flight. */
  #eachPage(fn: (m: Float32Array, v: Float32Array, at: number, len: number) => void): void {
    const off = this.#ready();
    off.synchronize();
    for (let p = 0; p < this.pages; p++) {
      const len = this.#len(p), bytes = off.bytesOf(this.#hosts[p]);
      const vAt = packedBytes([len * 4, 0]); // where toHost packs v after m
      const mh = new Float32Array(bytes.buffer, bytes.byteOffset, len);
      const vh = new Float32Array(bytes.buffer, bytes.byteOffset + vAt, len);
      fn(mh, vh, p * this.#page, len);
    }
  }

  /** Free the host memory and the staging. */
  release(): void {
    this.#off?.release();
    for (const s of this.#sets) {
      this.#be.free(s.m);
      this.#be.free(s.v);
    }
    this.#off = null;
    this.#hosts = [];
    this.#sets = [];
  }

  /** Host bytes of page p: its m, then its v, packed as the offloader packs them. */
  #hostPageBytes(p: number): number {
    const bytes = this.#len(p) * 4;
    return packedBytes([bytes, bytes]);
  }

  /** Page p's length. */
  #len(p: number): number {
    return Math.min(this.#page, this.length - p * this.#page);
  }

  /** Staging views (page p's length) of set s. */
  #views(s: Staging, p: number): [DeviceBuffer, DeviceBuffer] {
    const len = this.#len(p);
    return [this.#be.view(s.m, 0, len), this.#be.view(s.v, 0, len)];
  }

  /** The offloader, the zeroed host pages and the staging sets, made once. */
  #ready(): ActivationOffloader {
    if (this.#off) return this.#off;
    const be = this.#be, off = this.#newOffloader();
    this.#off = off;
    for (let i = 0; i < this.#setCount; i++) {
      this.#sets.push({
        m: be.alloc(this.#page, "f32"),
        v: be.alloc(this.#page, "f32"),
        paged: off.event(),
        written: off.event(),
      });
    }
    // page-locked memory comes uninitialised; nothing is queued yet, so write it directly
    for (let p = 0; p < this.pages; p++) {
      this.#hosts.push(off.allocHost(this.#hostPageBytes(p)));
      off.bytesOf(this.#hosts[p]).fill(0);
    }
    return off;
  }
}
