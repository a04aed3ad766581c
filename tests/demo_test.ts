/**
 * The embedded demo: its pieces (tokenizer.bin, task data, word split) and one full run of
 * `runDemo()` in a temporary directory (default settings: deterministic for the seed, a few
 * seconds of CPU), checking the outputs, falling losses, the held-out accuracy before
 * (<= 10%) and after (>= 80%) LoRA, and that `tune run generate` on the written merged
 * model and on base + PEFT adapter reproduces the in-process generations.
 */
import {
  deepStrictEqual as assertEquals,
  notStrictEqual as assertNotEquals,
  ok as assert,
} from "node:assert/strict";
import { parse, stringify } from "yaml";
import { demoConfig, runDemo } from "../recipes/demo.ts";
import { COPY_TASK, SHIFT_TASK, splitWords, taskRows, toJsonl } from "../src/demo/tasks.ts";
import { demoPhrases, demoTokenizerBytes } from "../src/demo/tokenizer.ts";
import { promptTokens } from "../src/generation/prompt.ts";
import { tokenizerFromBytes } from "../src/tokenizers/load.ts";
import { loadTokenizer } from "../src/tokenizers/load.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const INSTRUCTIONS = [COPY_TASK.instruction, SHIFT_TASK.instruction];

async function tune(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
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

Deno.test("demoTokenizerBytes() is a llama2.c tokenizer.bin: letters one by one, prompt phrases whole", () => {
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/tokenizer.bin`;
  Deno.writeFileSync(path, demoTokenizerBytes(INSTRUCTIONS));
  const tok = loadTokenizer(path);
  assertEquals([tok.bosId, tok.eosId], [1, 2]);
  const ids = promptTokens(tok, { instruction: SHIFT_TASK.instruction, input: "abcz" }, {
    instructTemplate: "alpaca",
    chatFormat: null,
  });
  // BOS, Alpaca head + "### Instruction:\n", the instruction, "### Input:\n", 4 letters, "### Response:\n"
  assertEquals(ids.length, 1 + 1 + 1 + 1 + 4 + 1);
  assertEquals(ids.slice(4, 8).map((i) => tok.decode([i])), ["a", "b", "c", "z"]);
  const pieces = ids.map((i) => tok.decode([i], { skipSpecial: false }));
  assertEquals(pieces[2], SHIFT_TASK.instruction);
  assertEquals(pieces[3], demoPhrases(INSTRUCTIONS)[1]);
  const text = "Any ASCII text, even ~odd~ {chars} 123!\nround-trips.";
  assertEquals(tok.decode(tok.encode(text, { bos: true })), text);
  Deno.removeSync(dir, { recursive: true });
  // format detection sees the same bytes as llama2.c's
  assertEquals(
    tokenizerFromBytes(demoTokenizerBytes(INSTRUCTIONS), "demo").vocabSize,
    tok.vocabSize,
  );
});

Deno.test("splitWords() gives disjoint, distinct, seeded word sets; the tasks map words", () => {
  const o = { seed: 3, pretrain: 300, finetune: 200, heldOut: 50, minLen: 4, maxLen: 4 };
  const a = splitWords(o);
  assertEquals(splitWords(o), a);
  assertNotEquals(JSON.stringify(splitWords({ ...o, seed: 4 })), JSON.stringify(a));
  const all = [...a.pretrain, ...a.finetune, ...a.heldOut];
  assertEquals(new Set(all).size, all.length);
  assert(all.every((w) => /^[a-z]{4}$/.test(w)));
  // held-out words do not depend on the training set sizes
  assertEquals(splitWords({ ...o, pretrain: 10 }).heldOut, a.heldOut);
  assertEquals(SHIFT_TASK.apply("abyz"), "bcza");
  assertEquals(COPY_TASK.apply("abyz"), "abyz");
  assertEquals(
    toJsonl(taskRows(SHIFT_TASK, ["hal"])),
    '{"instruction":"Shift each letter by one.","input":"hal","output":"ibm"}\n',
  );
});

Deno.test("demoConfig() rejects an unknown key with a one-line error", () => {
  let msg = "";
  try {
    demoConfig(["pretrain_step=3"]);
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(/pretrain_step/.test(msg) && !msg.includes("\n"), msg);
});

Deno.test("runDemo() trains, lifts held-out accuracy from <= 10% to >= 80%, and writes its outputs", async () => {
  const out = Deno.makeTempDirSync({ prefix: "tune_demo_" });
  const lines: string[] = [];
  const s = await runDemo(demoConfig([`output_dir=${out}`]), (l) => lines.push(l));
  const text = lines.join("\n");
  assert(text.includes("before LoRA") && text.includes("after LoRA"), text);

  // losses fall in both phases; one metrics record per step
  assert(s.pretrain.lastLoss < s.pretrain.firstLoss / 5, JSON.stringify(s.pretrain));
  assert(s.lora.lastLoss < s.lora.firstLoss / 5, JSON.stringify(s.lora));
  const records = Deno.readTextFileSync(s.files.lora_metrics).trim().split("\n");
  assertEquals(records.length, s.lora.steps);
  assertEquals(s.heldOut, 50);
  assert(s.accuracyBefore <= 0.1, `before: ${s.accuracyBefore}`);
  assert(s.accuracyAfter >= 0.8, `after: ${s.accuracyAfter}`);
  for (const f of Object.values(s.files)) assert(Deno.statSync(f).size > 0, f);
  assert(Deno.readTextFileSync(s.files.lora_loss_curve).startsWith("<svg"));
  const adapterDir = s.files.adapter.replace(/\/[^/]*$/, "");
  const adapterCfg = JSON.parse(Deno.readTextFileSync(`${adapterDir}/adapter_config.json`));
  assertEquals([adapterCfg.r, adapterCfg.lora_alpha], [16, 32]);
  assertEquals(JSON.parse(Deno.readTextFileSync(`${out}/demo_summary.json`)), s);

  // the written checkpoints generate what the in-process model did, through `tune run generate`
  const word = JSON.parse(
    Deno.readTextFileSync(`${out}/data/held_out.jsonl`).split("\n")[0],
  ).input as string;
  const common = [
    "run",
    "generate",
    "--config",
    "llama2c/generate",
    `tokenizer.path=${s.files.tokenizer}`,
    "instruct_template=alpaca",
    `prompt={instruction: "${SHIFT_TASK.instruction}", input: ${word}}`,
    "max_new_tokens=8",
    "temperature=0",
  ];
  const merged = await tune([...common, `checkpointer.checkpoint_dir=${adapterDir}`]);
  assertEquals(merged.code, 0, merged.stderr);
  const withAdapter = await tune([
    ...common,
    `checkpointer.checkpoint_dir=${s.files.base_model.replace(/\/[^/]*$/, "")}`,
    `checkpointer.adapter_checkpoint=${adapterDir}`,
  ]);
  assertEquals(withAdapter.code, 0, withAdapter.stderr);
  assertEquals(withAdapter.stdout, merged.stdout);
  // a lora_* model builder keeps the adapter unmerged in the model: same text
  const loraModel = (parse(Deno.readTextFileSync(`${out}/lora.yaml`)) as Record<string, unknown>)
    .model;
  const cfgPath = `${out}/generate_lora.yaml`;
  Deno.writeTextFileSync(
    cfgPath,
    stringify({
      model: loraModel,
      tokenizer: { _component_: "tune.tokenizers.load", path: s.files.tokenizer },
      checkpointer: {
        _component_: "tune.training.Llama2cCheckpointer",
        checkpoint_dir: s.files.base_model.replace(/\/[^/]*$/, ""),
        checkpoint_files: ["model.bin"],
        adapter_checkpoint: adapterDir,
        output_dir: `${out}/unused`,
        model_type: "LLAMA2C",
      },
      prompt: { instruction: SHIFT_TASK.instruction, input: word },
      instruct_template: "alpaca",
      max_new_tokens: 8,
      temperature: 0,
    }),
  );
  const unmerged = await tune(["run", "generate", "--config", cfgPath]);
  assertEquals(unmerged.code, 0, unmerged.stderr);
  assertEquals(unmerged.stdout, merged.stdout);
  const inProcess = text.split("\n").filter((l) => l.trim().startsWith(`${word} ->`));
  assertEquals(inProcess.length, 2); // before and after
  // stdout is the generated text and a closing newline
  assertEquals(
    JSON.stringify(merged.stdout.replace(/\n$/, "")),
    inProcess[1].trim().split(/\s+/)[2],
  );
  Deno.removeSync(out, { recursive: true });
});
