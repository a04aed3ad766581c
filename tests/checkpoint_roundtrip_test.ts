/**
 * Format round trips on the real aidreams260K llama2.c model (tests/data/models/aidreams260K):
 * llama2.c -> Hugging Face safetensors -> load, and llama2.c -> Meta .pth -> load, through
 * the registered checkpointer components. Every loader returns tune's canonical interleaved
 * rotary layout, so the state dicts must be bitwise equal and so must the logits (issue #4
 * asks for logits within 1e-6; the model runs the same fp32 operations, so the difference is
 * exactly 0). Negative control: the HF route's weights run with the wrong ("half") rope
 * layout give differences of order 1, so the comparison can fail.
 */
import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert";
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { findComponent } from "../src/config/registry.ts";
import "../src/checkpoint/components.ts";
import type { Checkpointer, LoadedCheckpoint } from "../src/checkpoint/checkpointer.ts";
import { readSafetensorsHeader } from "../src/checkpoint/safetensors.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import { type LlamaConfig, SIZE_FIELDS } from "../src/models/llama/config.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { assertClose, worstError } from "./fixture_io.ts";

const SHARED = new URL("./data/models/aidreams260K/", import.meta.url).pathname;

function checkpointer(name: string, args: Record<string, unknown>): Checkpointer {
  const spec = findComponent(name);
  if (!spec) throw new Error(`${name} not registered`);
  return spec.build({
    checkpoint_files: null,
    adapter_checkpoint: null,
    recipe_checkpoint: null,
    resume_from_checkpoint: false,
    safe_serialization: true,
    ...args,
  }) as Checkpointer;
}

function logits(sd: StateDict, config: LlamaConfig, tokens: Int32Array): Float32Array {
  const be = new CpuBackend();
  const model = createLlama(be, { name: "roundtrip", config, lora: null }, {
    batch: 1,
    seqLen: tokens.length,
  });
  model.loadStateDict(sd);
  const out = (be.download(model.forward(tokens)) as Float32Array).slice(); // (1, T, V)
  model.free();
  return out;
}

function assertSameStateDict(a: StateDict, b: StateDict) {
  assertEquals([...a.keys()].sort(), [...b.keys()].sort());
  for (const [n, t] of a) {
    const u = b.get(n)!;
    assertEquals(u.shape, t.shape, n);
    for (let i = 0; i < t.data.length; i++) {
      if (!Object.is(t.data[i], u.data[i])) {
        throw new Error(`${n}[${i}]: ${u.data[i]} != ${t.data[i]}`);
      }
    }
  }
}

const ARCH_KEYS = [...SIZE_FIELDS, "tiedEmbeddings", "qkvBias"] as const;

function roundTrip(format: "hf" | "meta") {
  const tmp = Deno.makeTempDirSync();
  try {
    const src = checkpointer("tune.training.Llama2cCheckpointer", {
      checkpoint_dir: SHARED,
      output_dir: join(tmp, "unused"),
      model_type: "LLAMA2C",
    });
    const orig: LoadedCheckpoint = src.load();
    const name = format === "hf"
      ? "torchtune.training.FullModelHFCheckpointer"
      : "torchtune.training.FullModelMetaCheckpointer";
    // Save from the llama2.c state dict (interleaved) into the target format.
    const writer = checkpointer(name, {
      checkpoint_dir: SHARED,
      output_dir: tmp,
      model_type: "LLAMA2",
    });
    const dir = writer.save({ stateDict: orig.stateDict, config: orig.config, epoch: 0 });
    assertEquals(dir, join(tmp, "epoch_0"));
    if (format === "hf") {
      const names = readSafetensorsHeader(join(dir, "model.safetensors")).entries.map((e) =>
        e.name
      );
      assert(names.includes("model.layers.0.self_attn.q_proj.weight"));
      assert(!names.includes("lm_head.weight"), "tied model must not store lm_head");
    }
    const back = checkpointer(name, {
      checkpoint_dir: dir,
      output_dir: join(tmp, "out2"),
      model_type: "LLAMA2",
    })
      .load();
    assertEquals(back.config.ropeLayout, "interleaved");
    for (const k of ARCH_KEYS) assertEquals(back.config[k], orig.config[k], k);
    assertEquals([back.config.ropeTheta, back.config.normEps], [
      orig.config.ropeTheta,
      orig.config.normEps,
    ]);
    // Weights: exact, q/k rows already back in llama2.c's interleaved layout.
    assertSameStateDict(back.stateDict, orig.stateDict);
    // Logits of the model built from each: issue #4's bound 1e-6, and in fact bitwise.
    const tokens = Int32Array.from({ length: 33 }, (_, i) => (i * 37 + 1) % orig.config.vocabSize);
    const a = logits(orig.stateDict, orig.config, tokens);
    const b = logits(back.stateDict, back.config, tokens);
    const w = worstError(b, a, 1e-6, 0);
    console.log(
      `llama2.c -> ${format} -> load: max |logit diff| ${
        w.maxAbs.toExponential(2)
      } over ${a.length} logits`,
    );
    assertClose(`${format} logits`, b, a, { atol: 1e-6, rtol: 0 });
    assertEquals(w.maxAbs, 0); // same layout, same operations: bitwise
    if (format === "hf") {
      // Control: the loaded weights run with the wrong rope layout differ by far more.
      const wrong = logits(back.stateDict, { ...back.config, ropeLayout: "half" }, tokens);
      const ww = worstError(wrong, a, 1e-6, 0);
      console.log(`control, wrong layout: max |logit diff| ${ww.maxAbs.toExponential(2)}`);
      assert(ww.maxAbs > 1e-2);
      assertThrows(() => assertClose("wrong layout logits", wrong, a, { atol: 1e-6, rtol: 0 }));
    }
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
}

Deno.test("llama2.c -> HF safetensors -> load gives the same weights and logits (within 1e-6: bitwise)", () => {
  roundTrip("hf");
});

Deno.test("llama2.c -> Meta consolidated.00.pth -> load gives the same weights and logits (bitwise)", () => {
  roundTrip("meta");
});

Deno.test("HF -> llama2.c through Llama2cCheckpointer.save() reads back bitwise", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const orig = checkpointer("tune.training.Llama2cCheckpointer", {
      checkpoint_dir: SHARED,
      output_dir: tmp,
      model_type: "LLAMA2C",
    }).load();
    const hfCk = checkpointer("torchtune.training.FullModelHFCheckpointer", {
      checkpoint_dir: SHARED,
      output_dir: join(tmp, "hf"),
      model_type: "LLAMA2",
    });
    const hfDir = hfCk.save({ stateDict: orig.stateDict, config: orig.config, epoch: 1 });
    const hf = checkpointer("torchtune.training.FullModelHFCheckpointer", {
      checkpoint_dir: hfDir,
      output_dir: join(tmp, "l2c"),
      model_type: "LLAMA2",
    }).load();
    const l2c = checkpointer("tune.training.Llama2cCheckpointer", {
      checkpoint_dir: SHARED,
      output_dir: join(tmp, "l2c"),
      model_type: "LLAMA2C",
    });
    const out = l2c.save({ stateDict: hf.stateDict, config: hf.config, epoch: 2 });
    const back = checkpointer("tune.training.Llama2cCheckpointer", {
      checkpoint_dir: out,
      output_dir: tmp,
      model_type: "LLAMA2C",
    }).load();
    assertSameStateDict(back.stateDict, orig.stateDict);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
