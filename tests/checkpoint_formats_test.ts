/**
 * Checkpoint file formats against PyTorch-made fixtures (tests/reference/checkpoint_reference.py):
 * safetensors (bf16 from torch), Meta .pth (torch.save, 1 and 2 shards), q/k permutation
 * against Hugging Face's permute(), our .pth writer read back by torch.load(weights_only=True),
 * the restricted unpickler refusing code, and one-line errors on corrupt files.
 * Tolerance: exact (0) everywhere: these are lossless conversions.
 */
import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert";
import { join } from "node:path";
import { loadFixture } from "./fixture_io.ts";
import { TuneError } from "../src/errors.ts";
import { loadHfCheckpoint, saveHfCheckpoint } from "../src/checkpoint/hf_checkpoint.ts";
import { loadMetaCheckpoint, saveMetaCheckpoint } from "../src/checkpoint/meta_checkpoint.ts";
import { readSafetensors, writeSafetensors } from "../src/checkpoint/safetensors.ts";
import { readPth, writePth } from "../src/checkpoint/torch_pth.ts";
import { ZipWriter } from "../src/checkpoint/zip.ts";
import { halfToInterleaved, interleavedToHalf } from "../src/checkpoint/rope_permute.ts";
import { tuneToHf, tuneToMeta } from "../src/checkpoint/key_mapping.ts";
import { atomicWriteWith } from "../src/checkpoint/atomic_write.ts";
import { decodeToF32, encodeFromF32 } from "../src/checkpoint/dtype.ts";
import type { StateDict } from "../src/params/state_dict.ts";

const FIX = new URL("./fixtures/", import.meta.url).pathname;

function assertExact(label: string, a: ArrayLike<number>, b: ArrayLike<number>) {
  assertEquals(a.length, b.length, `${label}: length`);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) {
      throw new Error(`${label}: element ${i} is ${a[i]}, expected ${b[i]}`);
    }
  }
}

/** Assert `fn` throws a one-line TuneError whose message contains every `parts`. */
function assertOneLineError(fn: () => unknown, parts: string[]) {
  let msg = "";
  throws(fn, (e: unknown) => {
    assert(e instanceof TuneError, `expected TuneError, got ${e}`);
    msg = (e as Error).message;
    return true;
  });
  assert(!msg.includes("\n"), `error is not one line: ${msg}`);
  for (const p of parts) assert(msg.includes(p), `error "${msg}" does not name ${p}`);
  console.log(`  error: ${msg}`);
}

Deno.test("loadHfCheckpoint() reads a torch-made bf16 safetensors file to the exact fp32 values", () => {
  const exp = loadFixture("checkpoint_hf_bf16_expected");
  const { stateDict, config } = loadHfCheckpoint(join(FIX, "checkpoint_hf_bf16"));
  assertEquals(config.tiedEmbeddings, true);
  assertEquals(config.ropeLayout, "interleaved");
  assertEquals(config.ropeScaling?.factor, 32);
  assertEquals([config.dim, config.nHeads, config.nKvHeads, config.hiddenDim], [16, 4, 2, 48]);
  assertEquals(stateDict.size, exp.names().length);
  for (const [name, t] of stateDict) {
    const hf = tuneToHf(name)!;
    assertEquals(t.sourceDtype, "bf16");
    assertEquals(t.shape, exp.shape(hf));
    // q/k rows come back in tune's interleaved layout; the file holds rotate-half rows.
    const qk = /\.(q|k)_proj\.weight$/.exec(name);
    const want = qk
      ? halfToInterleaved(exp.f32(hf), qk[1] === "q" ? config.nHeads : config.nKvHeads, t.shape[0])
      : exp.f32(hf);
    assertExact(name, t.data, want);
  }
});

Deno.test("loadMetaCheckpoint() reads torch.save .pth (fp32 + bf16) and merges 2 model-parallel shards", () => {
  const exp = loadFixture("checkpoint_meta_expected");
  const one = loadMetaCheckpoint(join(FIX, "checkpoint_meta"));
  const two = loadMetaCheckpoint(join(FIX, "checkpoint_meta2"));
  for (const r of [one, two]) {
    assertEquals(r.config.ropeLayout, "interleaved");
    assertEquals([r.config.vocabSize, r.config.hiddenDim, r.config.nKvHeads], [32, 48, 2]);
    assertEquals(
      r.stateDict.size,
      exp.names().filter((n) => !n.startsWith("hf.") && n !== "rope.freqs").length,
    );
    for (const [name, t] of r.stateDict) {
      const m = tuneToMeta(name)!;
      assertEquals(t.shape, exp.shape(m), name);
      assertExact(name, t.data, exp.f32(m));
    }
  }
  assertEquals(one.stateDict.get("layers.0.mlp.w3.weight")?.sourceDtype, "bf16");
});

Deno.test("interleavedToHalf() equals Hugging Face's permute() for wq (n_heads) and wk (n_kv_heads)", () => {
  const exp = loadFixture("checkpoint_meta_expected");
  for (const i of [0, 1]) {
    const p = `layers.${i}.attention.`;
    const wq = exp.f32(`${p}wq.weight`);
    const wk = exp.f32(`${p}wk.weight`);
    assertExact("wq", interleavedToHalf(wq, 4, 16), exp.f32(`hf.${p}wq.weight`));
    assertExact("wk", interleavedToHalf(wk, 2, 8), exp.f32(`hf.${p}wk.weight`));
    assertExact("wq inverse", halfToInterleaved(interleavedToHalf(wq, 4, 16), 4, 16), wq);
  }
});

Deno.test("Meta -> HF -> Meta conversion gives back the same tensors, HF files hold permuted q/k", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const exp = loadFixture("checkpoint_meta_expected");
    const meta = loadMetaCheckpoint(join(FIX, "checkpoint_meta"));
    saveHfCheckpoint(join(dir, "hf"), meta.stateDict, meta.config);
    const raw = readSafetensors(join(dir, "hf", "model.safetensors"));
    assertExact(
      "hf wk",
      raw.get("model.layers.1.self_attn.k_proj.weight")!.data,
      exp.f32("hf.layers.1.attention.wk.weight"),
    );
    assertEquals(raw.get("model.layers.0.mlp.up_proj.weight")!.sourceDtype, "bf16");
    const hf = loadHfCheckpoint(join(dir, "hf"));
    assertEquals(hf.config.ropeLayout, "interleaved");
    for (const [name, t] of meta.stateDict) {
      assertExact(`HF-loaded ${name}`, hf.stateDict.get(name)!.data, t.data);
    }
    saveMetaCheckpoint(join(dir, "meta"), hf.stateDict, hf.config);
    const back = loadMetaCheckpoint(join(dir, "meta"));
    assertEquals(back.config.hiddenDim, meta.config.hiddenDim);
    for (const [name, t] of meta.stateDict) {
      assertExact(name, back.stateDict.get(name)!.data, t.data);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

const PY = "/usr/bin/python3";
const hasTorch = (() => {
  try {
    return new Deno.Command(PY, { args: ["-c", "import torch"], stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "writePth() output is accepted by torch.load(weights_only=True) with the same values",
  ignore: !hasTorch,
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      const sd: StateDict = new Map([
        ["a.weight", { shape: [2, 3], data: new Float32Array([1, -2, 3.25, 4e-8, 5, 6]) }],
        ["b", { shape: [3], data: new Float32Array([0.1, 2, -3]), sourceDtype: "bf16" }],
        ["c", { shape: [2], data: new Float32Array([0.5, 65504]), sourceDtype: "f16" }],
      ]);
      const path = join(dir, "consolidated.00.pth");
      writePth(path, sd);
      const script = "import torch,json,sys\n" +
        "sd=torch.load(sys.argv[1],weights_only=True)\n" +
        "print(json.dumps({k:[str(v.dtype),list(v.shape),v.float().flatten().tolist()] for k,v in sd.items()}))";
      const out = new Deno.Command(PY, { args: ["-c", script, path] }).outputSync();
      assert(out.success, new TextDecoder().decode(out.stderr));
      const got = JSON.parse(new TextDecoder().decode(out.stdout));
      const dt = { f32: "torch.float32", bf16: "torch.bfloat16", f16: "torch.float16" };
      for (const [k, t] of sd) {
        const d = t.sourceDtype ?? "f32";
        assertEquals(got[k][0], dt[d]);
        assertEquals(got[k][1], t.shape);
        // Expected: our values rounded to the file dtype (exactly as torch stores them).
        assertExact(k, got[k][2], decodeToF32(encodeFromF32(t.data, d), d));
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

/** A zip with `archive/data.pkl` = `pickle` (how a torch.save file carries its pickle). */
function writePickleZip(path: string, pickle: Uint8Array) {
  atomicWriteWith(path, (f) => {
    const z = new ZipWriter(f);
    z.add("archive/data.pkl", pickle);
    z.add("archive/version", new TextEncoder().encode("3\n"));
    z.finish();
  });
}

Deno.test("readPth() refuses a pickle that calls os.system (GLOBAL + REDUCE) and names file and global", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const enc = new TextEncoder();
    const cmd = enc.encode(`touch ${dir}/pwned`);
    const bytes = [
      0x80,
      2, // PROTO 2
      0x63,
      ...enc.encode("os\nsystem\n"), // GLOBAL os.system
      0x58,
      cmd.length,
      0,
      0,
      0,
      ...cmd, // BINUNICODE
      0x85,
      0x52,
      0x2e, // TUPLE1 REDUCE STOP
    ];
    const path = join(dir, "evil.pth");
    writePickleZip(path, new Uint8Array(bytes));
    assertOneLineError(() => readPth(path), [path, "os.system"]);
    throws(() => Deno.statSync(join(dir, "pwned")));
    // builtins.eval through STACK_GLOBAL (protocol 4) is refused the same way.
    const mod = enc.encode("builtins");
    const fn = enc.encode("eval");
    const p4 = [0x80, 4, 0x8c, mod.length, ...mod, 0x8c, fn.length, ...fn, 0x93, 0x2e];
    writePickleZip(path, new Uint8Array(p4));
    assertOneLineError(() => readPth(path), [path, "builtins.eval"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

function tinySafetensors(path: string) {
  writeSafetensors(path, [
    ["model.embed_tokens.weight", { shape: [4, 2], data: new Float32Array(8).fill(1) }],
    ["model.norm.weight", { shape: [2], data: new Float32Array([1, 2]) }],
  ]);
}

Deno.test("readSafetensors() gives one-line errors naming file and tensor for corrupt files", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const path = join(dir, "model.safetensors");
    // Truncated: the last tensor runs past the end.
    tinySafetensors(path);
    const full = Deno.readFileSync(path);
    Deno.writeFileSync(path, full.subarray(0, full.length - 3));
    assertOneLineError(() => readSafetensors(path), [path, "model.norm.weight", "truncated"]);
    // Header length past the end of the file.
    const bad = full.slice();
    new DataView(bad.buffer).setBigUint64(0, 1n << 40n, true);
    Deno.writeFileSync(path, bad);
    assertOneLineError(() => readSafetensors(path), [path, "header length"]);
    // Unknown dtype.
    const headLen = Number(new DataView(full.buffer).getBigUint64(0, true));
    const head = new TextDecoder().decode(full.subarray(8, 8 + headLen)).replace(
      '"F32"',
      '"F8_E4M3"',
    );
    const headBytes = new TextEncoder().encode(head);
    const out = new Uint8Array(8 + headBytes.length + full.length - 8 - headLen);
    new DataView(out.buffer).setBigUint64(0, BigInt(headBytes.length), true);
    out.set(headBytes, 8);
    out.set(full.subarray(8 + headLen), 8 + headBytes.length);
    Deno.writeFileSync(path, out);
    assertOneLineError(() => readSafetensors(path), [path, "model.embed_tokens.weight", "F8_E4M3"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("loadHfCheckpoint() names the missing shard and a tensor it holds", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const src = loadHfCheckpoint(join(FIX, "checkpoint_hf_bf16"));
    saveHfCheckpoint(dir, src.stateDict, src.config, {
      maxShardBytes: 1500,
      configJson: src.configJson,
    });
    const index = JSON.parse(Deno.readTextFileSync(join(dir, "model.safetensors.index.json")));
    const shards = [...new Set(Object.values(index.weight_map))] as string[];
    assert(shards.length > 2, `expected several shards, got ${shards}`);
    // Round trip through shards is exact.
    const back = loadHfCheckpoint(dir);
    for (const [n, t] of src.stateDict) assertExact(n, back.stateDict.get(n)!.data, t.data);
    Deno.removeSync(join(dir, shards[1]));
    const holder = Object.entries(index.weight_map).find(([, f]) => f === shards[1])![0];
    assertOneLineError(() => loadHfCheckpoint(dir), [
      "model.safetensors.index.json",
      shards[1],
      holder,
    ]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("loadHfCheckpoint() names the tensor whose shape disagrees with config.json", () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.copyFileSync(
      join(FIX, "checkpoint_hf_bf16", "model.safetensors"),
      join(dir, "model.safetensors"),
    );
    const cfg = JSON.parse(Deno.readTextFileSync(join(FIX, "checkpoint_hf_bf16", "config.json")));
    cfg.intermediate_size = 64;
    Deno.writeTextFileSync(join(dir, "config.json"), JSON.stringify(cfg));
    assertOneLineError(() => loadHfCheckpoint(dir), [
      join(dir, "model.safetensors"),
      "layers.0.mlp.w1.weight",
      "[48,16]",
      "[64,16]",
    ]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("encodeFromF32() rounds to nearest even for bf16 and f16", () => {
  const v = new Float32Array([
    1 + 2 ** -8,
    1 + 3 * 2 ** -8,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    65520,
    -0,
  ]);
  const bf = decodeToF32(encodeFromF32(v, "bf16"), "bf16");
  assertExact("bf16", bf.subarray(0, 2), [1, 1 + 2 ** -6]);
  const h = decodeToF32(encodeFromF32(v, "f16"), "f16");
  assertExact("f16", h.subarray(2), [1, 1 + 2 ** -9, Infinity, -0]);
});

Deno.test({
  name: "readPth() reads deflate-compressed entries (a torch .pth re-zipped by Python's zipfile)",
  ignore: !hasTorch,
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      const src = join(FIX, "checkpoint_meta", "consolidated.00.pth");
      const dst = join(dir, "deflated.pth");
      const script = "import zipfile,sys\n" +
        "a=zipfile.ZipFile(sys.argv[1]); b=zipfile.ZipFile(sys.argv[2],'w',zipfile.ZIP_DEFLATED)\n" +
        "[b.writestr(i.filename, a.read(i.filename)) for i in a.infolist()]; b.close()";
      const out = new Deno.Command(PY, { args: ["-c", script, src, dst] }).outputSync();
      assert(out.success, new TextDecoder().decode(out.stderr));
      const a = readPth(src);
      const b = readPth(dst);
      assertEquals([...b.keys()], [...a.keys()]);
      for (const [k, t] of a) assertExact(k, b.get(k)!.data, t.data);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "readPth() reads torch 2.x's archive layout (records .format_version, .storage_alignment, byteorder, .data/serialization_id; 64-byte aligned storages)",
  ignore: !hasTorch,
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      const src = join(FIX, "checkpoint_meta", "consolidated.00.pth");
      const dst = join(dir, "consolidated.00.pth");
      // torch >= 2.1 writes these records and pads each storage to 64 bytes with an "FB" extra
      // field; the folder is the file's stem. The tensors and the pickle are 1.13's own.
      const script = [
        "import zipfile,sys,struct",
        "a=zipfile.ZipFile(sys.argv[1]); b=zipfile.ZipFile(sys.argv[2],'w',zipfile.ZIP_STORED)",
        "pre='consolidated.00/'",
        "def put(name,data):",
        "  zi=zipfile.ZipInfo(pre+name); n=len(zi.filename.encode())",
        "  pad=(-(b.fp.tell()+30+n+4))%64; zi.extra=struct.pack('<HH',0x4246,pad)+b'Z'*pad",
        "  b.writestr(zi,data)",
        "for i in a.infolist():",
        "  name=i.filename.split('/',1)[1]",
        "  if name=='data.pkl': [put(r,v) for r,v in (('.format_version',b'1'),('.storage_alignment',b'64'),('byteorder',b'little'))]",
        "  put(name,a.read(i.filename))",
        "put('.data/serialization_id',b'1234567890123456789012345678901234567890')",
        "b.close()",
      ].join("\n");
      const out = new Deno.Command(PY, { args: ["-c", script, src, dst] }).outputSync();
      assert(out.success, new TextDecoder().decode(out.stderr));
      // torch itself reads the rewritten file, so it is a valid torch archive
      const check = new Deno.Command(PY, {
        args: ["-c", "import torch,sys; torch.load(sys.argv[1], weights_only=True)", dst],
      }).outputSync();
      assert(check.success, new TextDecoder().decode(check.stderr));
      const a = readPth(src);
      const b = readPth(dst);
      assertEquals([...b.keys()], [...a.keys()]);
      for (const [k, t] of a) assertExact(k, b.get(k)!.data, t.data);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("loadHfCheckpoint() reads pytorch_model.bin (torch.save zip) named in checkpoint_files", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const src = join(FIX, "checkpoint_hf_bf16");
    Deno.copyFileSync(join(src, "config.json"), join(dir, "config.json"));
    writePth(join(dir, "pytorch_model.bin"), readSafetensors(join(src, "model.safetensors")));
    const a = loadHfCheckpoint(src);
    const b = loadHfCheckpoint(dir, ["pytorch_model.bin"]);
    for (const [k, t] of a.stateDict) assertExact(k, b.stateDict.get(k)!.data, t.data);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
