/**
 * Lazy host tensors (src/params/state_dict.ts): a safetensors load fills a parameter store with
 * the same bits as an eager read, in every file dtype and for f32 and bf16 stores; mapped
 * tensors compute nothing until filled and give the eager mapping's values; a spread copy with
 * new `data` is an ordinary tensor (its writer writes the new values); a store's lazy tensors
 * read the store's current values.
 */
import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import {
  lazySafetensors,
  readSafetensors,
  writeSafetensors,
} from "../src/checkpoint/safetensors.ts";
import { ParamLayout } from "../src/params/layout.ts";
import { ParamStore } from "../src/params/store.ts";
import { type HostTensor, lazyTensor, mapTensor } from "../src/params/state_dict.ts";

const shape = [3, 1000];
const values = new Float32Array(3000).map((_, i) => Math.sin(i * 0.71) * (1 + (i % 7)));
const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

function withDir(fn: (dir: string) => void): void {
  const dir = Deno.makeTempDirSync();
  try {
    fn(dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

for (const dtype of ["f32", "bf16", "f16"] as const) {
  for (const storeDtype of ["f32", "bf16"] as const) {
    Deno.test(`a lazy ${dtype} safetensors tensor fills a ${storeDtype} store like an eager read`, () => {
      withDir((dir) => {
        const path = `${dir}/m.safetensors`;
        writeSafetensors(path, [["w", { shape, data: values }]], { dtype });
        const layout = new ParamLayout([{ name: "g", tensors: [{ name: "w", shape }] }]);
        const be = new CpuBackend();
        const lazy = new ParamStore(be, layout, false, storeDtype);
        const eager = new ParamStore(be, layout, false, storeDtype);
        const t = lazySafetensors(path).get("w")!;
        ok(t.lazy, "lazySafetensors gives lazy tensors");
        equal(t.sourceDtype, dtype);
        lazy.setTensor("w", t);
        eager.setTensor("w", readSafetensors(path).get("w")!);
        deepStrictEqual(bits(lazy.getTensor("w").data), bits(eager.getTensor("w").data));
        deepStrictEqual(bits(t.data), bits(readSafetensors(path).get("w")!.data));
      });
    });
  }
}

Deno.test("mapTensor of a lazy tensor runs when filled and matches the eager mapping", () => {
  let fills = 0;
  const lazy = lazyTensor(shape, (dst) => {
    fills++;
    dst.set(values);
  });
  const double = (d: Float32Array) => {
    for (let i = 0; i < d.length; i++) d[i] *= 2;
  };
  const mapped = mapTensor(lazy, double);
  equal(fills, 0, "nothing read before the values are used");
  const out = new Float32Array(values.length);
  mapped.lazy!.fill(out);
  equal(fills, 1);
  deepStrictEqual(bits(out), bits(mapTensor({ shape, data: values }, double).data));
  deepStrictEqual(Array.from(values.subarray(0, 3)), Array.from(lazy.data.subarray(0, 3)));
});

Deno.test("a spread copy of a lazy tensor with new data writes the new data", () => {
  withDir((dir) => {
    const lazy = lazyTensor(shape, (dst) => dst.set(values));
    const changed: HostTensor = { ...lazy, data: values.map((x) => x + 1) };
    equal(changed.lazy, undefined);
    writeSafetensors(`${dir}/c.safetensors`, [["w", changed], ["v", lazy]]);
    const back = readSafetensors(`${dir}/c.safetensors`);
    deepStrictEqual(bits(back.get("w")!.data), bits(changed.data));
    deepStrictEqual(bits(back.get("v")!.data), bits(values));
  });
});

Deno.test("a store's lazy tensor reads the store's current values", () => {
  const layout = new ParamLayout([{ name: "g", tensors: [{ name: "w", shape }] }]);
  const store = new ParamStore(new CpuBackend(), layout, false);
  const t = store.lazyTensor("w");
  store.fillWith("w", (dst) => dst.set(values));
  const out = new Float32Array(values.length);
  t.lazy!.fill(out);
  deepStrictEqual(bits(out), bits(values));
});
