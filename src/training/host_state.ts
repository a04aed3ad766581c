/**
 * Host state of the sharded holders (torchtune's `fsdp_cpu_offload: True`, FSDP2's
 * CPUOffloadPolicy): a rank's slices are buffers of a host CpuBackend, and each collective
 * reads or writes them through one device staging buffer of the largest group slice.
 * Moving a slice is a download and an upload of the same values (bf16 values widen to fp32
 * exactly and narrow back unchanged), so the numbers are those of slices kept on the device.
 */
import { CpuBackend } from "../backend/cpu/backend.ts";
import type { Backend, DeviceBuffer, DType } from "../backend/ops.ts";

/** The host backend of a rank's slices and the device staging they pass through. */
export class HostStaging {
  /** Where the slices live (and, for the optimizer, where the step runs). */
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

  /**
   * `n` elements of host buffer `src` from element `offset`, copied into the staging: a
   * device view, valid until the next `toDevice`.
   */
  toDevice(src: DeviceBuffer, offset: number, n: number): DeviceBuffer {
    const data = this.host.download(this.host.view(src, offset, n)) as Float32Array; // (n)
    const out = this.device.view(this.#stage, 0, n); // (n)
    this.device.upload(out, data);
    return out;
  }

  /** The staging's first `n` elements, for a device result that `fromDevice` then takes. */
  deviceScratch(n: number): DeviceBuffer {
    return this.device.view(this.#stage, 0, n);
  }

  /** Device buffer `src` into host buffer `dst` from element `offset`. */
  fromDevice(dst: DeviceBuffer, offset: number, src: DeviceBuffer): void {
    this.host.upload(dst, this.device.download(src) as Float32Array, offset);
  }

  /** Release the staging (the caller frees its host buffers). */
  free(): void {
    this.device.free(this.#stage);
  }
}
