/**
 * `checkpointer.keep_last_n_checkpoints`: older epoch_/step_ folders go only once a newer one
 * is complete, and a run killed in the middle of a save leaves every earlier folder intact.
 * Also: LoRA step folders hold the adapter only, epoch folders the merged model too, and
 * `output_format: gguf` adds model.gguf to full-model folders.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import { FullModelHFCheckpointer, loraSavesMergedModel } from "../src/checkpoint/checkpointer.ts";
import { loadRecipeState } from "../src/checkpoint/recipe_state.ts";
import "../src/export/components.ts"; // registers output_format gguf
import { readGgufHeader } from "../src/export/gguf_file.ts";
import { checkpointerOptions as options, tinyFamilies, writeTinyFamily } from "./_tiny_families.ts";

const CHILD = new URL("./_save_child.ts", import.meta.url).pathname;
const COMPLETE = [
  "config.json",
  "generation_config.json",
  "model.safetensors",
  "tokenizer.model",
  "tokenizer_config.json",
];

function names(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

function tinyInput(tmp: string): string {
  const input = join(tmp, "in");
  writeTinyFamily(tinyFamilies().find((f) => f.name === "llama2")!, input);
  return input;
}

async function runChild(args: string[], killOnHang: boolean): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CHILD, ...args],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let out = "";
  const dec = new TextDecoder();
  for await (const chunk of child.stdout) {
    out += dec.decode(chunk);
    if (killOnHang && out.includes("HANG")) {
      child.kill("SIGKILL");
      break;
    }
  }
  await child.status;
  return out;
}

Deno.test("keep_last_n_checkpoints=2 with 5 saves leaves exactly the last 2 complete folders", async () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const out = join(tmp, "out");
    const log = await runChild([tinyInput(tmp), out, "5", "2", "0"], false);
    assert(log.includes("saved step_5"), log);
    assertEquals(names(out), [".checkpoints.json", "recipe_state", "step_4", "step_5"]);
    for (const d of ["step_4", "step_5"]) assertEquals(names(join(out, d)), COMPLETE);
    assertEquals(loadRecipeState(join(out, "recipe_state")).extra?.savedDir, join(out, "step_5"));
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("killing a run during a save leaves the previous folders intact, and the next run cleans up", async () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const input = tinyInput(tmp);
    const out = join(tmp, "out");
    const log = await runChild([input, out, "5", "2", "3"], true); // killed inside save 3
    assert(log.includes("saved step_2") && !log.includes("saved step_3"), log);
    const left = names(out);
    assertEquals(left.filter((n) => !n.startsWith(".step_3.partial-")), [
      ".checkpoints.json",
      "recipe_state",
      "step_1",
      "step_2",
    ]);
    assert(left.some((n) => n.startsWith(".step_3.partial-")), left.join()); // the unfinished save
    for (const d of ["step_1", "step_2"]) assertEquals(names(join(out, d)), COMPLETE);
    assertEquals(loadRecipeState(join(out, "recipe_state")).extra?.savedDir, join(out, "step_2"));
    // both previous folders still load
    for (const d of ["step_1", "step_2"]) {
      new FullModelHFCheckpointer(options(join(out, d), join(tmp, "x"))).load();
    }
    // a new run removes the unfinished staging folder and goes on
    await runChild([input, out, "1", "2", "0"], false);
    assertEquals(names(out), [".checkpoints.json", "recipe_state", "step_1", "step_2"]);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("loraSavesMergedModel(): merged model at epoch ends only, never with save_adapter_weights_only", () => {
  assertEquals(loraSavesMergedModel({ isEpochEnd: true, adapterOnly: false }), true);
  assertEquals(loraSavesMergedModel({ isEpochEnd: false, adapterOnly: false }), false);
  assertEquals(loraSavesMergedModel({ isEpochEnd: true, adapterOnly: true }), false);
});

Deno.test("output_format gguf writes model.gguf beside the safetensors of a full-model folder", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const ck = new FullModelHFCheckpointer(
      options(tinyInput(tmp), join(tmp, "out"), { outputFormat: "gguf" }),
    );
    const dir = ck.save({ stateDict: ck.load().stateDict, epoch: 0 });
    assert(names(dir).includes("model.gguf"), names(dir).join());
    const h = readGgufHeader(join(dir, "model.gguf"));
    assertEquals(h.metadata.get("general.architecture"), "llama");
    assertEquals(h.metadata.get("general.file_type"), 1); // the weights' f16
    // no tokenizer in checkpoint_dir: refused at load, before any training
    const bare = join(tmp, "bare");
    Deno.mkdirSync(bare);
    for (const f of ["config.json", "model.safetensors"]) {
      Deno.copyFileSync(join(dir, f), join(bare, f));
    }
    const ck2 = new FullModelHFCheckpointer(
      options(bare, join(tmp, "o2"), { outputFormat: "gguf" }),
    );
    let msg = "";
    try {
      ck2.load();
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(/output_format=gguf needs the model's tokenizer/.test(msg), msg);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
