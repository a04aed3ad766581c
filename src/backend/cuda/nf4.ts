/**
 * NF4 base weights (QLoRA) on the CUDA backend. The dequantize-to-bf16 kernel
 * (kernels/nf4.cu) is not written yet, so a QLoRA model on CUDA is refused in one line.
 */
import { TuneError } from "../../errors.ts";
import type { DeviceBuffer, Nf4Weight } from "../ops.ts";
import type { CudaContext } from "./context.ts";

function unsupported(): never {
  throw new TuneError(
    "QLoRA (NF4 base weights) has no CUDA kernel yet; run it with device=cpu, or use a lora_* builder on CUDA",
  );
}

export function nf4Dequantize(
  _ctx: CudaContext,
  _out: DeviceBuffer,
  _w: Nf4Weight,
  _row0: number,
  _rows: number,
): void {
  unsupported();
}

export function nf4MatmulForward(
  _ctx: CudaContext,
  _out: DeviceBuffer,
  _inp: DeviceBuffer,
  _w: Nf4Weight,
  _bias: DeviceBuffer | null,
  _M: number,
  _accumulate?: boolean,
): void {
  unsupported();
}

export function nf4MatmulBackward(
  _ctx: CudaContext,
  _dinp: DeviceBuffer,
  _dout: DeviceBuffer,
  _w: Nf4Weight,
  _M: number,
): void {
  unsupported();
}
