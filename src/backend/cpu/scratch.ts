/** Reusable scratch memory of the CPU backend: grown on demand, never shrunk. */

/** Named Float32Array scratch slots; `get` returns a view of at least n elements. */
export class Scratch {
  private slots: Float32Array[] = [];

  /** A Float32Array of exactly n elements from slot `slot` (contents undefined). */
  get(slot: number, n: number): Float32Array {
    let buf = this.slots[slot];
    if (buf === undefined || buf.length < n) {
      // Grow geometrically so a sequence of slightly larger requests does not thrash.
      const size = Math.max(n, buf === undefined ? 0 : Math.ceil(buf.length * 1.5));
      buf = new Float32Array(size);
      this.slots[slot] = buf;
    }
    return buf.length === n ? buf : buf.subarray(0, n);
  }

  private slots64: Float64Array[] = [];

  /** A Float64Array of exactly n elements from f64 slot `slot` (contents undefined). */
  get64(slot: number, n: number): Float64Array {
    let buf = this.slots64[slot];
    if (buf === undefined || buf.length < n) {
      buf = new Float64Array(Math.max(n, buf === undefined ? 0 : Math.ceil(buf.length * 1.5)));
      this.slots64[slot] = buf;
    }
    return buf.length === n ? buf : buf.subarray(0, n);
  }

  /** Bytes held by all slots. */
  bytes(): number {
    let total = 0;
    for (const s of this.slots) if (s) total += s.byteLength;
    for (const s of this.slots64) if (s) total += s.byteLength;
    return total;
  }
}
