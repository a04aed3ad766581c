/**
 * Host state of the sharded holders (torchtune's `fsdp_cpu_offload: True`, FSDP2's
 * CPUOffloadPolicy): a rank's slices live in host memory, and each collective reads or
 * writes them through one device staging buffer of the largest group slice. Moving a slice
 * is a download and an upload of the same values (bf16 values widen to fp32 exactly and
 * narrow back unchanged), so the numbers are those of slices kept on the device.
 */
import { CpuBackend } from "../backend/cpu/backend.ts";
import type { Backend, DeviceBuffer, DType } from "../backend/ops.ts";

/** The host backend of a rank's slices and the device staging they pass through. */
export class HostStaging {
  /** Where the trainable slices live and the optimizer step runs. */
  readonly host: Backend = new CpuBackend();
  /** (largest slice) device buffer in the slices' dtype. */
  readonly #stage: DeviceBuffer;

  /**
   * @param device the compute backend (a CpuBackend too in the tests).
   * @param length elements of the largest slice that passes through.
   */
  constructor(readonly device: Backend, length: number, dtype: DType) {
    this.#stage = device.alloc(Math.max(1, length), dtype);
  }

  /** Bytes of the device staging. */
  get deviceBytes(): number {
    return this.#stage.length * (this.#stage.dtype === "bf16" ? 2 : 4);
  }

  /** `data` copied into the staging: a device view, valid until the next upload. */
  upload(data: Float32Array): DeviceBuffer {
    const out = this.device.view(this.#stage, 0, data.length); // (n)
    this.device.upload(out, data);
    return out;
  }

  /** `n` elements of host-backend buffer `src` from element `offset`, into the staging. */
  toDevice(src: DeviceBuffer, offset: number, n: number): DeviceBuffer {
    return this.upload(this.host.download(this.host.view(src, offset, n)) as Float32Array);
  }

  /** The staging's first `n` elements, for a device result that `fromDevice` then takes. */
  deviceScratch(n: number): DeviceBuffer {
    return this.device.view(this.#stage, 0, n);
  }

  /** Device buffer `src` into host-backend buffer `dst` from element `offset`. */
  fromDevice(dst: DeviceBuffer, offset: number, src: DeviceBuffer): void {
    this.host.upload(dst, this.device.download(src) as Float32Array, offset);
  }

  /** Release the staging (the caller frees its host buffers). */
  free(): void {
    this.device.free(this.#stage);
  }
}

/**
 * Frozen values in host memory in their own width: fp32 words, or bf16 as the high 16 bits
 * of each fp32 word (exact: the values come from a bf16 device buffer), so a bf16 base takes
 * 2 bytes an element on the host as on the device.
 */
export class HostValues {
  readonly #f32: Float32Array | null;
  readonly #bf16: Uint16Array | null;

  constructor(readonly length: number, readonly dtype: DType) {
    this.#bf16 = dtype === "bf16" ? new Uint16Array(length) : null;
    this.#f32 = dtype === "bf16" ? null : new Float32Array(length);
  }

  /** Bytes held. */
  get bytes(): number {
    return this.length * (this.#bf16 ? 2 : 4);
  }

  /** Store `data` from element `offset` (bf16: values a bf16 buffer held, so no bits drop). */
  set(offset: number, data: Float32Array): void {
    if (this.#f32) {
      this.#f32.set(data, offset);
      return;
    }
    const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
    const out = this.#bf16!;
    for (let i = 0; i < data.length; i++) out[offset + i] = bits[i] >>> 16;
  }

  /** `n` values from element `offset`, widened to fp32 (a new array). */
  get(offset: number, n: number): Float32Array {
    if (this.#f32) return this.#f32.slice(offset, offset + n);
    const wide = new Uint32Array(n);
    const src = this.#bf16!;
    for (let i = 0; i < n; i++) wide[i] = src[offset + i] << 16;
    return new Float32Array(wide.buffer);
  }
}
