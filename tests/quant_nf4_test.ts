/**
 * NF4 quantization against tests/reference/nf4_reference.py (torchao's to_nf4 algorithm in
 * torch): packed codes, int8 block scalers, factors, mean and the dequantized tensor are
 * bitwise equal, for fp32 and bf16 inputs, two scaler groups and an all-zero block; the
 * shapes torchao refuses are refused with its reason.
 */
import assert from "node:assert/strict";
import { loadFixture } from "./fixture_io.ts";
import { checkNf4Shape, nf4Bytes, nf4Dequantize, nf4Quantize } from "../src/quant/nf4.ts";
import { TuneError } from "../src/errors.ts";
import { roundArrayBf16 } from "../src/backend/cpu/buffer.ts";
import { hashedTensor } from "./_quant_helpers.ts";

const fx = loadFixture("nf4");

/** The inputs nf4_reference.py made with `hashed`. */
function caseInput(name: string): { data: Float32Array; shape: number[] } {
  const shape = fx.meta<Record<string, number[]>>("shapes")[name];
  const args: Record<string, [number, number, boolean]> = {
    f32_128x128: [1, 0.05, false],
    f32_flat16384: [2, 2.0, false],
    bf16_128x128: [3, 0.05, true],
    f32_zero_block_128x256: [4, 0.1, true],
  };
  const [seed, scale, cube] = args[name];
  const data = hashedTensor(shape, seed, scale, cube);
  if (name.startsWith("bf16")) roundArrayBf16(data, data);
  if (name === "f32_zero_block_128x256") {
    for (let i = 0; i < data.length; i++) data[i] = Math.fround(data[i] + 0.001);
    data.fill(0, 3 * 256 + 64, 3 * 256 + 128);
  }
  let sum = 0;
  for (const v of data) sum += v;
  const want = fx.f32(`${name}.input_sum`)[0];
  assert.ok(Math.abs(sum - want) <= 1e-6 * Math.abs(want) + 1e-6, `${name}: inputs remade`);
  return { data, shape };
}

function bytesOf(a: Int32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

for (const name of fx.meta<string[]>("cases")) {
  Deno.test(`nf4Quantize() equals torchao's algorithm bitwise on ${name}`, () => {
    const { data: input, shape } = caseInput(name);
    const q = nf4Quantize(input, shape, { dtype: name.startsWith("bf16") ? "bf16" : "f32" });
    const packed = bytesOf(fx.i32(`${name}.packed`));
    let codeDiff = 0;
    for (let i = 0; i < packed.length; i++) if (packed[i] !== q.codes[i]) codeDiff++;
    const scalers = new Int8Array(fx.i32(`${name}.scalers`).buffer);
    let scalerDiff = 0;
    for (let i = 0; i < scalers.length; i++) if (scalers[i] !== q.scalers[i]) scalerDiff++;
    assert.equal(codeDiff, 0, `${codeDiff} of ${packed.length} code bytes differ`);
    assert.equal(scalerDiff, 0, `${scalerDiff} of ${scalers.length} scalers differ`);
    assert.deepEqual(q.factors, fx.f32(`${name}.factors`));
    assert.equal(q.mean, fx.f32(`${name}.mean`)[0]);
    const deq = nf4Dequantize(q);
    const want = fx.f32(`${name}.dequantized`);
    let worst = 0, bad = 0;
    for (let i = 0; i < want.length; i++) {
      if (!Object.is(deq[i], want[i])) bad++;
      worst = Math.max(worst, Math.abs(deq[i] - want[i]));
    }
    let err = 0, ref = 0;
    for (let i = 0; i < want.length; i++) {
      err += (deq[i] - input[i]) ** 2;
      ref += input[i] ** 2;
    }
    console.log(
      `${name}: ${input.length} elements bitwise (${bad} differ); relative L2 error of NF4 ${
        Math.sqrt(err / ref).toExponential(3)
      }`,
    );
    assert.equal(bad, 0, `${bad} dequantized values differ (worst ${worst})`);
  });
}

Deno.test("nf4Dequantize() of a slice equals that slice of the whole tensor", () => {
  const name = "f32_zero_block_128x256";
  const { data, shape } = caseInput(name);
  const q = nf4Quantize(data, shape);
  const whole = nf4Dequantize(q);
  const part = nf4Dequantize(q, undefined, 1000, 3000);
  assert.deepEqual(part, whole.subarray(1000, 4000));
});

Deno.test("checkNf4Shape() refuses what torchao refuses, with its reason", () => {
  assert.throws(() => checkNf4Shape("w", [2, 2, 4096]), TuneError);
  assert.throws(() => checkNf4Shape("w", [10, 100]), /multiple of the block size 64/);
  assert.throws(() => checkNf4Shape("k_proj", [64, 128]), /multiple of the scaler block size 256/);
  checkNf4Shape("w", [128, 128]);
  checkNf4Shape("w", [512, 2048]);
});

Deno.test("nf4Bytes() is about 0.52 bytes a parameter", () => {
  const n = 2048 * 8192;
  const per = nf4Bytes(n) / n;
  console.log(`NF4: ${per.toFixed(4)} bytes a parameter (bf16: 2, fp32: 4)`);
  assert.ok(per > 0.515 && per < 0.517);
});
