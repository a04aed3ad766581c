/**
 * GGUF export and import without llama.cpp: bitwise round trips for f32/f16/bf16 in every
 * family, Q8_0 as ggml defines it, the metadata llama.cpp reads, the tokenizer rebuilt from
 * the metadata, and `tune export` on the command line (llama.cpp itself judges the files in
 * export_llama_cpp_test.ts).
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import { f16ToF32, f32ToF16 } from "../src/checkpoint/dtype.ts";
import { findTokenizerFile } from "../src/checkpoint/hf_folder.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import { dequantizeQ8_0, quantizeQ8_0 } from "../src/export/ggml_types.ts";
import { exportGguf, type GgufDtype } from "../src/export/gguf_export.ts";
import { readGgufHeader } from "../src/export/gguf_file.ts";
import { importGguf } from "../src/export/gguf_import.ts";
import { tokenizerMetadata } from "../src/export/gguf_tokenizer.ts";
import { loadModelFolder } from "../src/export/model_folder.ts";
import { loadTokenizer } from "../src/tokenizers/load.ts";
import { tinyFamilies, tinyGemma2, writeTinyFamily } from "./_tiny_families.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const AIDREAMS = join(ROOT, "tests/data/models/aidreams260K");

function bf16(v: number): number {
  const u = new Uint32Array(new Float32Array([v]).buffer)[0];
  const r = (u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000;
  return new Float32Array(new Uint32Array([r >>> 0]).buffer)[0];
}

/** What the file must hold: 2-D tensors rounded to `dtype`, 1-D ones as they are (stored F32). */
function rounded(sd: StateDict, dtype: GgufDtype): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [k, t] of sd) {
    const round = t.shape.length < 2 || dtype === "f32"
      ? (v: number) => v
      : dtype === "f16"
      ? (v: number) => f16ToF32(f32ToF16(v))
      : bf16;
    out.set(k, t.data.map(round));
  }
  return out;
}

function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

for (const f of [...tinyFamilies(), tinyGemma2()]) {
  Deno.test(`GGUF export then import of a tiny ${f.name} gives bitwise-equal weights (f32, f16, bf16)`, () => {
    const dir = Deno.makeTempDirSync({ prefix: `tune_rt_${f.name}_` });
    try {
      writeTinyFamily(f, dir);
      const m = loadModelFolder(dir);
      const tok = tokenizerMetadata(dir, m.config.vocabSize, m.family.bpePre);
      for (const dtype of ["f32", "f16", "bf16"] as GgufDtype[]) {
        const path = join(dir, `m_${dtype}.gguf`);
        exportGguf(path, m.stateDict, m.config, {
          family: m.family,
          dtype,
          tokenizer: tok,
          name: f.name,
        });
        const back = importGguf(path);
        assertEquals(back.config, m.config);
        assertEquals([...back.stateDict.keys()].sort(), [...m.stateDict.keys()].sort());
        const want = rounded(m.stateDict, dtype);
        let normUlps = 0;
        for (const [k, t] of back.stateDict) {
          if (bitsEqual(t.data, want.get(k)!)) continue;
          // Gemma stores 1 + scale (F32); the few scales under 2^-13 lose bits to that sum
          assert(
            m.config.normOffset && k.endsWith("norm.scale"),
            `${f.name} ${dtype} ${k} differs`,
          );
          t.data.forEach((v: number, i: number) =>
            assert(Math.abs(v - want.get(k)![i]) <= 2 ** -24)
          );
          normUlps++;
        }
        if (normUlps) console.log(`${f.name} ${dtype}: ${normUlps} norm tensors within 2^-24`);
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  });
}

Deno.test("GGUF export then import of aidreams260K (fp32 weights) is bitwise for f32, f16 and bf16", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const m = loadModelFolder(AIDREAMS);
    const tok = tokenizerMetadata(AIDREAMS, m.config.vocabSize, m.family.bpePre);
    for (const dtype of ["f32", "f16", "bf16"] as GgufDtype[]) {
      const path = join(dir, `a_${dtype}.gguf`);
      exportGguf(path, m.stateDict, m.config, {
        family: m.family,
        dtype,
        tokenizer: tok,
        name: "a",
      });
      const back = importGguf(path);
      assertEquals(back.config, m.config);
      const want = rounded(m.stateDict, dtype);
      for (const [k, t] of back.stateDict) assert(bitsEqual(t.data, want.get(k)!), `${dtype} ${k}`);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("GGUF metadata holds llama.cpp's architecture keys and the tokenizer", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const m = loadModelFolder(AIDREAMS);
    const path = join(dir, "a.gguf");
    exportGguf(path, m.stateDict, m.config, {
      family: m.family,
      dtype: "q8_0",
      tokenizer: tokenizerMetadata(AIDREAMS, m.config.vocabSize, m.family.bpePre),
      name: "aidreams260K",
    });
    const h = readGgufHeader(path);
    assertEquals(h.version, 3);
    const md = h.metadata;
    assertEquals(md.get("general.architecture"), "llama");
    assertEquals(md.get("general.file_type"), 7);
    assertEquals(md.get("llama.embedding_length"), 64);
    assertEquals(md.get("llama.block_count"), 4);
    assertEquals(md.get("llama.feed_forward_length"), 172);
    assertEquals(md.get("llama.attention.head_count_kv"), 4);
    assertEquals(md.get("llama.rope.dimension_count"), 16);
    assertEquals(md.get("tokenizer.ggml.model"), "llama");
    assertEquals((md.get("tokenizer.ggml.tokens") as string[]).length, 512);
    assertEquals(md.get("tokenizer.ggml.bos_token_id"), 1);
    // tied embeddings: no output.weight; w2's rows (172) are no multiple of 32: F16, not Q8_0
    const types = new Map(h.tensors.map((t) => [t.name, t.type]));
    assert(!types.has("output.weight"));
    assertEquals(types.get("blk.0.ffn_down.weight"), "F16");
    assertEquals(types.get("blk.0.attn_q.weight"), "Q8_0");
    assertEquals(types.get("blk.0.attn_norm.weight"), "F32");
    assertEquals(h.tensors.find((t) => t.name === "blk.0.ffn_gate.weight")!.shape, [172, 64]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("quantizeQ8_0() stores max|x|/127 as fp16 and rounds x/d half away from zero", () => {
  const x = new Float32Array(64);
  x[0] = 127; // d = 1
  x[1] = 2.5; // halves round away from zero
  x[2] = -2.5;
  x[3] = 0.49;
  const q = quantizeQ8_0(x);
  assertEquals(q.length, 68);
  assertEquals(f16ToF32(q[0] | (q[1] << 8)), 1);
  assertEquals([...new Int8Array(q.buffer, 2, 4)], [127, 3, -3, 0]);
  assertEquals([...q.subarray(34, 36)], [0, 0]); // an all-zero block has d = 0
  const back = dequantizeQ8_0(q);
  assertEquals([...back.subarray(0, 4)], [127, 3, -3, 0]);
  // error bound on random data: |x - q d| <= d / 2 (+ fp16 rounding of d)
  const r = Float32Array.from({ length: 256 }, (_, i) => Math.sin(i * 1.7) * (1 + (i % 7)));
  const rb = dequantizeQ8_0(quantizeQ8_0(r));
  for (let b = 0; b < 8; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(r[b * 32 + j]));
    for (let j = 0; j < 32; j++) {
      assert(Math.abs(r[b * 32 + j] - rb[b * 32 + j]) <= (amax / 127) * 0.5 + amax * 2e-3);
    }
  }
});

async function tune(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("tune export gguf then tune export hf gives back the weights and a tokenizer that encodes the same", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    for (const f of tinyFamilies().filter((x) => ["llama3_2", "qwen2", "phi3"].includes(x.name))) {
      const src = join(dir, f.name);
      writeTinyFamily(f, src);
      const gguf = join(dir, `${f.name}.gguf`);
      let r = await tune(["export", "gguf", "--checkpoint", src, "--output", gguf]);
      assertEquals(r.code, 0, r.stderr);
      const back = join(dir, `${f.name}_hf`);
      r = await tune(["export", "hf", "--gguf", gguf, "--output", back]);
      assertEquals(r.code, 0, r.stderr);
      const a = loadModelFolder(src), b = loadModelFolder(back);
      for (const [k, t] of a.stateDict) assert(bitsEqual(t.data, b.stateDict.get(k)!.data), k);
      const text = "Once upon a time, the little dog said hello";
      const ta = loadTokenizer(findTokenizerFile(src)!),
        tb = loadTokenizer(findTokenizerFile(back)!);
      assertEquals(tb.encode(text), ta.encode(text), f.name);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("tune export refuses a bad dtype, a folder without a model and a missing flag in one line", async () => {
  for (
    const [args, msg] of [
      [
        ["export", "gguf", "--checkpoint", AIDREAMS, "--output", "/tmp/x.gguf", "--dtype", "q4"],
        /--dtype q4 is not one of/,
      ],
      [
        ["export", "gguf", "--checkpoint", "/nonexistent", "--output", "/tmp/x.gguf"],
        /holds no model tune reads/,
      ],
      [["export", "gguf", "--output", "/tmp/x.gguf"], /needs --checkpoint/],
      [["export", "onnx"], /unknown target 'onnx'/],
    ] as [string[], RegExp][]
  ) {
    const r = await tune(args);
    assertEquals(r.code, 1);
    assert(msg.test(r.stderr), r.stderr);
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});
