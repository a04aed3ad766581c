/**
 * A checkpoint folder tune writes serves as the next run's input with nothing else given:
 * with `tokenizer.path` unset, recipes read the tokenizer the folder holds (the save copied
 * it from the input folder), as `from_pretrained` does.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const TOKENIZER = new URL("./fixtures/tokenizer_sp_small.model", import.meta.url).pathname;

async function tune(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
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

Deno.test("recipes read the tokenizer from checkpoint_dir when tokenizer.path is unset", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tune_tok_folder_" });
  try {
    // a base model folder: tiny full fine-tune output plus its tokenizer file
    const base = await tune(
      "run",
      "full_finetune_single_device",
      "--config",
      "tiny/full_single_device",
      `output_dir=${dir}/base`,
      "epochs=1",
      "max_steps_per_epoch=1",
    );
    assert.equal(base.code, 0, base.stderr);
    Deno.copyFileSync(TOKENIZER, `${dir}/base/epoch_0/tokenizer.model`);
    // LoRA from that folder with no tokenizer.path: the folder's tokenizer, copied on save
    const lora = await tune(
      "run",
      "lora_finetune_single_device",
      "--config",
      "tiny/lora_single_device",
      "model_init=checkpoint",
      `checkpointer.checkpoint_dir=${dir}/base/epoch_0`,
      "~tokenizer.path",
      `output_dir=${dir}/lora`,
      "epochs=1",
      "max_steps_per_epoch=2",
    );
    assert.equal(lora.code, 0, lora.stderr);
    const saved = `${dir}/lora/epoch_0`;
    assert.ok(Deno.statSync(`${saved}/tokenizer.model`).isFile, "the save copies the tokenizer");
    // eval of the saved folder, with and without tokenizer.path: the same loss
    const evalArgs = [
      "run",
      "eval",
      "--config",
      "tiny/eval",
      "model_init=checkpoint",
      `checkpointer.checkpoint_dir=${saved}`,
      `output_dir=${dir}/eval`,
    ];
    const given = await tune(...evalArgs);
    const found = await tune(...evalArgs, "~tokenizer.path");
    assert.equal(given.code, 0, given.stderr);
    assert.equal(found.code, 0, found.stderr);
    assert.match(found.stdout, /loss/);
    assert.equal(found.stdout, given.stdout);
    // a folder without a tokenizer says what to set
    Deno.removeSync(`${dir}/base/epoch_0/tokenizer.model`);
    const none = await tune(
      ...evalArgs.slice(0, 5),
      `checkpointer.checkpoint_dir=${dir}/base/epoch_0`,
      "~tokenizer.path",
    );
    assert.equal(none.code, 1);
    assert.match(
      none.stderr,
      /tokenizer.path is not set and checkpointer.checkpoint_dir .* holds no/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
