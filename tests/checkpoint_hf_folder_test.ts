/**
 * A folder the Hugging Face checkpointer writes is a complete model folder: weights in the
 * checkpoint's dtype and shard layout, config.json with that torch_dtype, and the input's
 * tokenizer and generation files; it loads back through the same checkpointer with the
 * tokenizer found in the folder. LoRA saves write a complete PEFT adapter folder.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import { FullModelHFCheckpointer } from "../src/checkpoint/checkpointer.ts";
import { findTokenizerFile } from "../src/checkpoint/hf_folder.ts";
import { saveHfCheckpoint } from "../src/checkpoint/hf_checkpoint.ts";
import { hfConfigJson } from "../src/checkpoint/hf_config.ts";
import { Phi3MiniHFCheckpointer } from "../src/checkpoint/phi3_checkpointer.ts";
import { loadTokenizer } from "../src/tokenizers/load.ts";
import {
  checkpointerOptions as options,
  randomWeights,
  tinyFamilies,
  writeTinyFamily,
} from "./_tiny_families.ts";

/** The files each family's output folder must hold (the tiny inputs hold exactly these). */
const MUST_HOLD: Record<string, string[]> = {
  llama2: [
    "config.json",
    "model.safetensors",
    "tokenizer.model",
    "tokenizer_config.json",
    "generation_config.json",
  ],
  llama3_2: [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
  ],
  mistral: [
    "config.json",
    "model.safetensors",
    "tokenizer.model",
    "tokenizer_config.json",
    "generation_config.json",
  ],
  qwen2: [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
  ],
  qwen3: [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
  ],
  gemma: [
    "config.json",
    "model.safetensors",
    "tokenizer.model",
    "tokenizer_config.json",
    "generation_config.json",
  ],
  phi3: [
    "config.json",
    "model.safetensors",
    "tokenizer.model",
    "tokenizer_config.json",
    "generation_config.json",
  ],
};

function files(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

for (const f of tinyFamilies()) {
  Deno.test(`FullModelHFCheckpointer writes a complete ${f.name} folder that loads back with its tokenizer`, () => {
    const tmp = Deno.makeTempDirSync({ prefix: `tune_hf_${f.name}_` });
    try {
      const input = join(tmp, "in");
      writeTinyFamily(f, input);
      const mk = (dir: string) =>
        f.name === "phi3"
          ? new Phi3MiniHFCheckpointer(options(dir, join(tmp, "out"), { modelType: "PHI3_MINI" }))
          : new FullModelHFCheckpointer(options(dir, join(tmp, "out")));
      const ck = mk(input);
      const loaded = ck.load();
      const out = ck.save({ stateDict: loaded.stateDict, epoch: 0 });
      assertEquals(files(out), [...MUST_HOLD[f.name]].sort());
      const cfg = JSON.parse(Deno.readTextFileSync(join(out, "config.json")));
      assertEquals(cfg.torch_dtype, "float16"); // the tiny checkpoints hold f16 weights
      assertEquals(cfg.architectures, [f.arch]);
      // back through the same checkpointer, tokenizer from the folder (no tokenizer.path)
      const again = mk(out).load();
      for (const [k, t] of loaded.stateDict) assertEquals(again.stateDict.get(k)!.data, t.data, k);
      const text = "Once upon a time, the little dog";
      const tIn = loadTokenizer(findTokenizerFile(input)!);
      const tOut = loadTokenizer(findTokenizerFile(out)!);
      assertEquals(tOut.encode(text), tIn.encode(text));
    } finally {
      Deno.removeSync(tmp, { recursive: true });
    }
  });
}

Deno.test("a sharded input is saved sharded, with its index and the tokenizer files", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const f = tinyFamilies().find((x) => x.name === "llama2")!;
    const input = join(tmp, "in");
    writeTinyFamily(f, input);
    Deno.removeSync(join(input, "model.safetensors"));
    const sd = randomWeights(f.config, 7);
    saveHfCheckpoint(input, sd, f.config, {
      configJson: hfConfigJson(f.config, { modelType: "LLAMA2" }),
      maxShardBytes: 40_000,
    });
    const inFiles = files(input);
    assert(inFiles.includes("model.safetensors.index.json") && inFiles.length > 7, inFiles.join());
    const ck = new FullModelHFCheckpointer(options(input, join(tmp, "out")));
    const out = ck.save({ stateDict: ck.load().stateDict, epoch: 0 });
    assertEquals(files(out), inFiles);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("a LoRA save writes a complete PEFT adapter folder (base model, targets, rank, alpha, DoRA flag)", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const f = tinyFamilies().find((x) => x.name === "llama3_2")!;
    const input = join(tmp, "in");
    writeTinyFamily(f, input);
    const ck = new FullModelHFCheckpointer(options(input, join(tmp, "out")));
    const { config } = ck.load();
    const r = 4, C = config.dim;
    const adapter = new Map([
      ["layers.0.attn.q_proj.lora_a.weight", {
        shape: [r, C],
        data: new Float32Array(r * C).fill(0.01),
      }],
      ["layers.0.attn.q_proj.lora_b.weight", {
        shape: [C, r],
        data: new Float32Array(C * r).fill(0.02),
      }],
    ]);
    const lora = {
      attnModules: ["q_proj" as const, "v_proj" as const],
      applyToMlp: true,
      applyToOutput: false,
      rank: r,
      alpha: 8,
      dropout: 0,
    };
    const out = ck.save({ adapter: { stateDict: adapter, lora }, epoch: 0, dirName: "step_3" });
    assert(files(out).includes("adapter_model.safetensors"));
    assert(!files(out).includes("model.safetensors"));
    const ac = JSON.parse(Deno.readTextFileSync(join(out, "adapter_config.json")));
    assertEquals(ac.base_model_name_or_path, input);
    assertEquals(ac.target_modules, ["q_proj", "v_proj", "gate_proj", "down_proj", "up_proj"]);
    assertEquals([ac.r, ac.lora_alpha, ac.use_dora, ac.peft_type], [4, 8, false, "LORA"]);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
