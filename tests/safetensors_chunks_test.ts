/**
 * safetensors reading and writing in chunks: a bf16 / f16 tensor longer than one 4 MB
 * conversion chunk round-trips exactly as the element-wise conversions of dtype.ts say,
 * f32 round-trips bitwise, and a truncated file is refused in one line.
 */
import { deepStrictEqual, throws } from "node:assert/strict";
import { readSafetensors, writeSafetensors } from "../src/checkpoint/safetensors.ts";
import { decodeToF32, encodeFromF32 } from "../src/checkpoint/dtype.ts";
import { TuneError } from "../src/errors.ts";

const n = (1 << 21) + 37; // one chunk of 2^21 elements and a tail
const data = new Float32Array(n).map((_, i) => Math.sin(i * 0.37) * (1 + (i % 11)));
data[5] = NaN;
data[6] = -Infinity;

for (const dtype of ["f32", "bf16", "f16"] as const) {
  Deno.test(`writeSafetensors()/readSafetensors() convert ${dtype} across chunks exactly`, () => {
    const dir = Deno.makeTempDirSync();
    try {
      const path = `${dir}/t.safetensors`;
      writeSafetensors(path, [["a", { shape: [n], data }], ["b", {
        shape: [3],
        data: data.subarray(0, 3),
      }]], { dtype });
      const back = readSafetensors(path);
      const want = decodeToF32(encodeFromF32(data, dtype), dtype);
      deepStrictEqual(new Uint32Array(back.get("a")!.data.buffer), new Uint32Array(want.buffer));
      deepStrictEqual(Array.from(back.get("b")!.data), Array.from(want.subarray(0, 3)));
      const bytes = Deno.readFileSync(path);
      Deno.writeFileSync(path, bytes.subarray(0, bytes.length - 4));
      throws(() => readSafetensors(path), TuneError);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  });
}
