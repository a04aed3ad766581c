/**
 * Checkpointer behaviour recipes rely on: torchtune's checkpoint_files forms, output layout
 * (epoch_N/, recipe_state/), keeping the input's shard layout, PEFT adapters (names, config,
 * rotate-half semantics), LoRA merge, recipe state bitwise round trip, atomic writes.
 * Tolerances: exact unless stated.
 */
import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert";
import { join } from "node:path";
import { findComponent } from "../src/config/registry.ts";
import "../src/checkpoint/components.ts";
import { type Checkpointer, expandCheckpointFiles } from "../src/checkpoint/checkpointer.ts";
import { loadHfCheckpoint, saveHfCheckpoint } from "../src/checkpoint/hf_checkpoint.ts";
import { mergeLora } from "../src/checkpoint/peft.ts";
import { loadRecipeState, saveRecipeState } from "../src/checkpoint/recipe_state.ts";
import { readSafetensors, writeSafetensors } from "../src/checkpoint/safetensors.ts";
import { atomicWrite, atomicWriteWith } from "../src/checkpoint/atomic_write.ts";
import { convertRopeLayout } from "../src/checkpoint/rope_permute.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import type { LoraConfig } from "../src/models/model_spec.ts";
import { loraParamShapes } from "../src/models/builders/param_shapes.ts";
import { TuneError } from "../src/errors.ts";
import { assertClose } from "./fixture_io.ts";

const FIX = new URL("./fixtures/", import.meta.url).pathname;

function build(name: string, args: Record<string, unknown>): Checkpointer {
  return findComponent(name)!.build({
    checkpoint_files: null,
    adapter_checkpoint: null,
    recipe_checkpoint: null,
    resume_from_checkpoint: false,
    safe_serialization: true,
    ...args,
  }) as Checkpointer;
}

function exact(label: string, a: ArrayLike<number>, b: ArrayLike<number>) {
  assertEquals(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) throw new Error(`${label}[${i}]: ${a[i]} != ${b[i]}`);
  }
}

/** Deterministic pseudo-random values in [-0.5, 0.5). */
function rand(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  });
}

Deno.test("expandCheckpointFiles() expands torchtune's {filename_format, max_filename} form", () => {
  assertEquals(
    expandCheckpointFiles({ filename_format: "model-{}-of-{}.safetensors", max_filename: "00003" }),
    [
      "model-00001-of-00003.safetensors",
      "model-00002-of-00003.safetensors",
      "model-00003-of-00003.safetensors",
    ],
  );
  assertEquals(expandCheckpointFiles(["a.safetensors"]), ["a.safetensors"]);
  throws(
    () => expandCheckpointFiles({ filename_format: "x.safetensors", max_filename: "2" }),
    TuneError,
  );
});

Deno.test("FullModelHFCheckpointer.save() keeps the input's shard files and index under epoch_N", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const src = loadHfCheckpoint(join(FIX, "checkpoint_hf_bf16"));
    const inDir = join(tmp, "in");
    saveHfCheckpoint(inDir, src.stateDict, src.config, {
      maxShardBytes: 3000,
      configJson: src.configJson,
    });
    const idx = JSON.parse(Deno.readTextFileSync(join(inDir, "model.safetensors.index.json")));
    const n = new Set(Object.values(idx.weight_map)).size;
    const ck = build("torchtune.training.FullModelHFCheckpointer", {
      checkpoint_dir: inDir,
      checkpoint_files: {
        filename_format: "model-{}-of-{}.safetensors",
        max_filename: String(n).padStart(5, "0"),
      },
      output_dir: join(tmp, "out"),
      model_type: "LLAMA3_2",
    });
    const loaded = ck.load();
    const dir = ck.save({ stateDict: loaded.stateDict, epoch: 3 });
    assertEquals(dir, join(tmp, "out", "epoch_3"));
    const out = JSON.parse(Deno.readTextFileSync(join(dir, "model.safetensors.index.json")));
    assertEquals(out.weight_map, idx.weight_map);
    const cfg = JSON.parse(Deno.readTextFileSync(join(dir, "config.json")));
    assertEquals([cfg.architectures, cfg.torch_dtype, cfg.bos_token_id], [
      ["LlamaForCausalLM"],
      "bfloat16",
      1,
    ]);
    assertEquals(cfg.rope_scaling.factor, 32);
    for (const f of new Set(Object.values(idx.weight_map)) as Set<string>) {
      assertEquals(Deno.readFileSync(join(dir, f)), Deno.readFileSync(join(inDir, f)), f);
    }
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("save() writes a PEFT adapter whose lora_B rows are rotate-half, and merged weights agree in HF space", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    // An interleaved (Meta) model with LoRA on q, k, v, output_proj and the MLP.
    const ck = build("torchtune.training.FullModelMetaCheckpointer", {
      checkpoint_dir: join(FIX, "checkpoint_meta"),
      output_dir: tmp,
      model_type: "LLAMA2",
    });
    const { stateDict, config } = ck.load();
    const lora: LoraConfig = {
      attnModules: ["q_proj", "k_proj", "v_proj", "output_proj"],
      applyToMlp: true,
      applyToOutput: true,
      rank: 2,
      alpha: 4,
      dropout: 0.05,
    };
    const adapter: StateDict = new Map();
    let seed = 1;
    for (const [name, shape] of loraParamShapes(config, lora)) {
      adapter.set(name, { shape, data: rand(shape[0] * shape[1], seed++) });
    }
    const merged = mergeLora(stateDict, adapter, lora);
    const dir = ck.save({ stateDict: merged, adapter: { stateDict: adapter, lora }, epoch: 0 });
    const conf = JSON.parse(Deno.readTextFileSync(join(dir, "adapter_config.json")));
    assertEquals(conf.peft_type, "LORA");
    assertEquals(conf.task_type, "CAUSAL_LM");
    assertEquals([conf.r, conf.lora_alpha, conf.lora_dropout], [2, 4, 0.05]);
    assertEquals(conf.target_modules, [
      "q_proj",
      "k_proj",
      "v_proj",
      "o_proj",
      "gate_proj",
      "down_proj",
      "up_proj",
      "lm_head",
    ]);
    assertEquals(conf.base_model_name_or_path, join(FIX, "checkpoint_meta"));
    const peft = readSafetensors(join(dir, "adapter_model.safetensors"));
    assert(peft.has("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    assert(peft.has("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
    assert(peft.has("base_model.model.lm_head.lora_B.weight"));
    assertEquals(peft.size, adapter.size);
    // PEFT semantics in HF space: W_hf + (alpha/r) B_file A_file == HF-permuted merged weight.
    const hfBase = convertRopeLayout(stateDict, config, "half");
    const hfMerged = convertRopeLayout(merged, config, "half");
    for (const mod of ["q_proj", "k_proj", "v_proj"]) {
      const p = `base_model.model.model.layers.1.self_attn.${mod}`;
      const a = peft.get(`${p}.lora_A.weight`)!;
      const b = peft.get(`${p}.lora_B.weight`)!;
      const w = hfBase.get(`layers.1.attn.${mod}.weight`)!;
      const [outDim, inDim] = w.shape;
      const viaPeft = new Float32Array(w.data);
      for (let o = 0; o < outDim; o++) {
        for (let k = 0; k < 2; k++) {
          for (let i = 0; i < inDim; i++) {
            viaPeft[o * inDim + i] += 2 * b.data[o * 2 + k] * a.data[k * inDim + i];
          }
        }
      }
      assertClose(mod, viaPeft, hfMerged.get(`layers.1.attn.${mod}.weight`)!.data, {
        atol: 1e-6,
        rtol: 1e-6,
      });
    }
    // Loading the adapter back (adapter_checkpoint) restores tune's interleaved tensors exactly.
    const again = build("torchtune.training.FullModelMetaCheckpointer", {
      checkpoint_dir: join(FIX, "checkpoint_meta"),
      output_dir: tmp,
      model_type: "LLAMA2",
      adapter_checkpoint: dir,
    }).load();
    for (const [n, t] of adapter) exact(n, again.adapter!.get(n)!.data, t.data);
    // The merged model was written in Meta format and reloads exactly.
    const reread = build("torchtune.training.FullModelMetaCheckpointer", {
      checkpoint_dir: dir,
      output_dir: tmp,
      model_type: "LLAMA2",
    }).load();
    for (const [n, t] of merged) {
      const dt = stateDict.get(n)!.sourceDtype;
      if (dt === "f32" || dt === undefined) exact(n, reread.stateDict.get(n)!.data, t.data);
    }
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("FullModelHFCheckpointer.load() with a PEFT adapter gives interleaved q/k lora_b that merge like PEFT does in HF space", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const hfDir = join(FIX, "checkpoint_hf_bf16");
    // A PEFT adapter file in Hugging Face (rotate-half) space, rank 2 on q/k/v of layer 0.
    const named: [string, { shape: number[]; data: Float32Array }][] = [];
    const raw = readSafetensors(join(hfDir, "model.safetensors"));
    let seed = 11;
    for (const mod of ["q_proj", "k_proj", "v_proj"]) {
      const [outDim, inDim] = raw.get(`model.layers.0.self_attn.${mod}.weight`)!.shape;
      const p = `base_model.model.model.layers.0.self_attn.${mod}`;
      named.push([`${p}.lora_A.weight`, { shape: [2, inDim], data: rand(2 * inDim, seed++) }]);
      named.push([`${p}.lora_B.weight`, { shape: [outDim, 2], data: rand(outDim * 2, seed++) }]);
    }
    writeSafetensors(join(tmp, "adapter_model.safetensors"), named, { dtype: "f32" });
    const loaded = build("torchtune.training.FullModelHFCheckpointer", {
      checkpoint_dir: hfDir,
      output_dir: join(tmp, "out"),
      model_type: "LLAMA3_2",
      adapter_checkpoint: tmp,
    }).load();
    assertEquals(loaded.config.ropeLayout, "interleaved");
    const lora: LoraConfig = {
      attnModules: ["q_proj", "k_proj", "v_proj"],
      applyToMlp: false,
      applyToOutput: false,
      rank: 2,
      alpha: 4,
      dropout: 0,
    };
    // Merge in tune space, then put q/k rows back in HF order; PEFT merges in file space.
    const merged = convertRopeLayout(
      mergeLora(loaded.stateDict, loaded.adapter!, lora),
      loaded.config,
      "half",
    );
    const file = new Map(named);
    for (const mod of ["q_proj", "k_proj", "v_proj"]) {
      const p = `base_model.model.model.layers.0.self_attn.${mod}`;
      const a = file.get(`${p}.lora_A.weight`)!;
      const b = file.get(`${p}.lora_B.weight`)!;
      const w = raw.get(`model.layers.0.self_attn.${mod}.weight`)!;
      const [outDim, inDim] = w.shape;
      const viaPeft = new Float32Array(w.data);
      for (let o = 0; o < outDim; o++) {
        for (let k = 0; k < 2; k++) {
          for (let i = 0; i < inDim; i++) {
            viaPeft[o * inDim + i] += 2 * b.data[o * 2 + k] * a.data[k * inDim + i];
          }
        }
      }
      // Same products in the same order per element: exact.
      exact(mod, merged.get(`layers.0.attn.${mod}.weight`)!.data, viaPeft);
    }
    // Control: q's lora_b really was permuted on load (its rows differ from the file's).
    const qb = loaded.adapter!.get("layers.0.attn.q_proj.lora_b.weight")!.data;
    const fileQb = file.get("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")!.data;
    assert(qb.some((v, i) => v !== fileQb[i]));
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("saveRecipeState()/loadRecipeState() round-trip bitwise and resume_from_checkpoint finds them", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const m = rand(1000, 7);
    m[3] = -0;
    m[4] = 1e-45; // denormal survives
    const state = {
      step: 12,
      epoch: 1,
      seed: 42,
      dataPosition: 6,
      lrScheduler: { lastStep: 12, baseLrs: [0.001] },
      rng: { s: [1, 2, 3, 4] },
      tensors: new Map([
        ["m", { shape: [1000], data: m }],
        ["v", { shape: [10, 100], data: rand(1000, 8).map(Math.abs) }],
      ]) as StateDict,
    };
    const ck = build("tune.training.Llama2cCheckpointer", {
      checkpoint_dir: new URL("./data/models/aidreams260K/", import.meta.url).pathname,
      output_dir: tmp,
      model_type: "LLAMA2C",
    });
    ck.load();
    ck.save({ recipeState: state, epoch: 0 });
    const resumed = build("tune.training.Llama2cCheckpointer", {
      checkpoint_dir: new URL("./data/models/aidreams260K/", import.meta.url).pathname,
      output_dir: tmp,
      model_type: "LLAMA2C",
      resume_from_checkpoint: true,
    }).load();
    const r = resumed.recipeState!;
    assertEquals([r.step, r.epoch, r.seed, r.dataPosition], [12, 1, 42, 6]);
    assertEquals(r.lrScheduler, state.lrScheduler);
    assertEquals(r.rng, state.rng);
    for (const [n, t] of state.tensors) exact(n, r.tensors.get(n)!.data, t.data);
    // A tensors file from another save (interrupted between the two files) is detected.
    const dir = join(tmp, "recipe_state");
    const json = Deno.readTextFileSync(join(dir, "recipe_state.json"));
    saveRecipeState(dir, { ...state, step: 13 });
    Deno.writeTextFileSync(join(dir, "recipe_state.json"), json);
    throws(
      () => loadRecipeState(dir),
      (e: unknown) => e instanceof TuneError && /interrupted save/.test((e as Error).message),
    );
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("atomicWriteWith() leaves the previous file intact and no temp file when the writer fails", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const path = join(tmp, "model.safetensors");
    atomicWrite(path, "good");
    throws(() =>
      atomicWriteWith(path, (f) => {
        f.writeSync(new TextEncoder().encode("half-writ"));
        throw new Error("disk full");
      })
    );
    assertEquals(Deno.readTextFileSync(path), "good");
    assertEquals([...Deno.readDirSync(tmp)].map((e) => e.name), ["model.safetensors"]);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("load({resumeFromCheckpoint}) takes weights and adapter from the epoch dir the recipe state names", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const args = {
      checkpoint_dir: join(FIX, "checkpoint_hf_bf16"),
      output_dir: tmp,
      model_type: "LLAMA3_2",
    };
    const ck = build("torchtune.training.FullModelHFCheckpointer", args);
    const first = ck.load();
    const state = {
      step: 5,
      epoch: 1,
      seed: 0,
      dataPosition: 0,
      lrScheduler: {},
      rng: null,
      tensors: new Map() as StateDict,
    };
    // Full fine-tune: trained weights saved at epoch 0.
    const trained: StateDict = new Map(first.stateDict);
    const norm = trained.get("norm.scale")!;
    trained.set("norm.scale", { ...norm, data: norm.data.map((x) => x * 2) }); // exact in bf16
    ck.save({ stateDict: trained, recipeState: state, epoch: 0 });
    const fresh = build("torchtune.training.FullModelHFCheckpointer", args);
    assertEquals(fresh.load().stateDict.get("norm.scale")!.data, norm.data);
    const resumed = fresh.load({ resumeFromCheckpoint: true });
    assertEquals(resumed.recipeState!.step, 5);
    assertEquals(resumed.stateDict.get("norm.scale")!.data, trained.get("norm.scale")!.data);
    assertEquals(resumed.adapter, null);
    // LoRA run: adapter-only save at epoch 1; resume keeps the base, finds the adapter.
    const lora: LoraConfig = {
      attnModules: ["q_proj"],
      applyToMlp: false,
      applyToOutput: false,
      rank: 2,
      alpha: 4,
      dropout: 0,
    };
    const adapter: StateDict = new Map();
    for (const [name, shape] of loraParamShapes(first.config, lora)) {
      adapter.set(name, { shape, data: rand(shape[0] * shape[1], 3) });
    }
    ck.save({
      adapter: { stateDict: adapter, lora },
      recipeState: { ...state, step: 9 },
      epoch: 1,
    });
    const r2 = build("torchtune.training.FullModelHFCheckpointer", args).load({
      resumeFromCheckpoint: true,
    });
    assertEquals(r2.recipeState!.step, 9);
    assertEquals(r2.stateDict.get("norm.scale")!.data, norm.data);
    for (const [n, t] of adapter) exact(n, r2.adapter!.get(n)!.data, t.data);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("load({resumeFromCheckpoint}) after a LoRA save (merged + adapter) gives the original base and the saved adapter", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    // An fp32 Hugging Face input, so the saved merged weights are not rounded.
    const src = loadHfCheckpoint(join(FIX, "checkpoint_hf_bf16"));
    const inDir = join(tmp, "in");
    saveHfCheckpoint(inDir, src.stateDict, src.config, {
      dtype: "f32",
      configJson: src.configJson,
    });
    const args = { checkpoint_dir: inDir, output_dir: join(tmp, "out"), model_type: "LLAMA3_2" };
    const ck = build("torchtune.training.FullModelHFCheckpointer", args);
    const base = ck.load();
    const lora: LoraConfig = {
      attnModules: ["q_proj", "k_proj", "v_proj", "output_proj"],
      applyToMlp: true,
      applyToOutput: false, // the fixture ties its output to the embedding
      rank: 2,
      alpha: 4,
      dropout: 0,
    };
    const adapter: StateDict = new Map();
    let seed = 21;
    for (const [name, shape] of loraParamShapes(base.config, lora)) {
      adapter.set(name, { shape, data: rand(shape[0] * shape[1], seed++) });
    }
    const merged = mergeLora(base.stateDict, adapter, lora);
    const dir = ck.save({
      stateDict: merged,
      adapter: { stateDict: adapter, lora },
      recipeState: {
        step: 4,
        epoch: 1,
        seed: 0,
        dataPosition: 0,
        lrScheduler: {},
        rng: null,
        tensors: new Map(),
      },
      epoch: 0,
    });
    const resumed = build("torchtune.training.FullModelHFCheckpointer", args).load({
      resumeFromCheckpoint: true,
    });
    assertEquals(resumed.recipeState!.step, 4);
    // Base: the original weights, bitwise (not the merged ones the epoch dir holds).
    assertEquals([...resumed.stateDict.keys()].sort(), [...base.stateDict.keys()].sort());
    for (const [n, t] of base.stateDict) exact(n, resumed.stateDict.get(n)!.data, t.data);
    // Adapter: the saved one, bitwise.
    assertEquals([...resumed.adapter!.keys()].sort(), [...adapter.keys()].sort());
    for (const [n, t] of adapter) exact(n, resumed.adapter!.get(n)!.data, t.data);
    // Base + adapter merged again equals the merged weights the save wrote (atol 1e-6).
    const savedMerged = build("torchtune.training.FullModelHFCheckpointer", {
      ...args,
      checkpoint_dir: dir,
    }).load().stateDict;
    const remerged = mergeLora(resumed.stateDict, resumed.adapter!, lora);
    let maxDiff = 0;
    for (const [n, t] of savedMerged) {
      const r = remerged.get(n)!.data;
      assertClose(n, r, t.data, { atol: 1e-6, rtol: 0 });
      for (let i = 0; i < r.length; i++) maxDiff = Math.max(maxDiff, Math.abs(r[i] - t.data[i]));
    }
    console.log(`base + adapter vs saved merged: max |diff| ${maxDiff}`);
    // Control: the adapter moved the LoRA'd weights, so a double-applied adapter would fail.
    const q = "layers.0.attn.q_proj.weight";
    assert(savedMerged.get(q)!.data.some((v, i) => v !== base.stateDict.get(q)!.data[i]));
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
