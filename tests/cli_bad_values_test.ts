/**
 * Every bad value a config can hold is refused by `tune validate` and at the start of
 * `tune run`, before any work: exit code 1, one line on stderr naming the key and the fix,
 * no stack trace. Each case runs the real CLI in a subprocess.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

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

/** Exit code 1, exactly one `tune: ` line on stderr matching `re`, no stack trace. */
function assertOneLine(r: { code: number; stderr: string }, re: RegExp, what: string): void {
  assert.equal(r.code, 1, `${what}: exit code (stderr: ${r.stderr})`);
  const lines = r.stderr.trimEnd().split("\n").filter((l) => !l.startsWith("tune: running "));
  assert.equal(lines.length, 1, `${what}: one line on stderr, got:\n${r.stderr}`);
  assert.ok(lines[0].startsWith("tune: "), `${what}: ${lines[0]}`);
  assert.doesNotMatch(r.stderr, /^\s+at /m, `${what}: no stack trace`);
  assert.doesNotMatch(r.stderr, /internal error/, `${what}: no internal error`);
  assert.match(lines[0], re, what);
}

/** The training recipes and a tiny config of each. */
const TRAINING = [
  ["lora_finetune_single_device", "tiny/lora_single_device"],
  ["full_finetune_single_device", "tiny/full_single_device"],
  ["lora_finetune_distributed", "tiny/lora_distributed"],
  ["full_finetune_distributed", "tiny/full_distributed"],
  ["lora_dpo_single_device", "tiny/lora_dpo_single_device"],
  ["knowledge_distillation_single_device", "tiny/kd_single_device"],
] as const;

/** Sizes and counts: [override, the message it must give]. */
const BAD_SIZES: Array<[string, RegExp]> = [
  ["batch_size=0", /bad value for 'batch_size': 0 must be at least 1/],
  ["batch_size=-3", /bad value for 'batch_size': -3 must be at least 1/],
  ["epochs=0", /bad value for 'epochs': 0 must be at least 1/],
  ["gradient_accumulation_steps=0", /'gradient_accumulation_steps': 0 must be at least 1/],
  ["max_steps_per_epoch=0", /'max_steps_per_epoch': 0 must be at least 1; or null/],
  ["log_every_n_steps=0", /'log_every_n_steps': 0 must be at least 1/],
  ["tokenizer.max_seq_len=0", /'tokenizer.max_seq_len': 0 must be at least 1/],
  ["optimizer.lr=-1e-3", /'optimizer.lr': -0.001 must be at least 0/],
];

Deno.test("tune validate refuses every bad size or count in every training recipe", async () => {
  const runs = TRAINING.flatMap(([recipe, config]) =>
    BAD_SIZES.map(async ([override, re]) => {
      const r = await tune("validate", recipe, "--config", config, override);
      assertOneLine(r, re, `validate ${recipe} ${override}`);
    })
  );
  await Promise.all(runs);
});

Deno.test("tune run refuses bad sizes before any work, and LoRA's rank below 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tune_bad_values_" });
  try {
    const cases: Array<[string[], RegExp]> = [
      [
        ["lora_finetune_single_device", "--config", "tiny/lora_single_device", "batch_size=0"],
        /'batch_size': 0/,
      ],
      [
        ["full_finetune_single_device", "--config", "tiny/full_single_device", "epochs=0"],
        /'epochs': 0/,
      ],
      [
        ["lora_finetune_single_device", "--config", "tiny/lora_single_device", "model.lora_rank=0"],
        /'model.lora_rank': 0 must be at least 1/,
      ],
      [[
        "--nproc_per_node",
        "2",
        "lora_finetune_distributed",
        "--config",
        "tiny/lora_distributed",
        "batch_size=0",
      ], /'batch_size': 0/],
      [[
        "lora_finetune_single_device",
        "--config",
        "tiny/lora_single_device",
        "save_every_n_steps=0",
      ], /'save_every_n_steps': 0 must be at least 1/],
    ];
    await Promise.all(cases.map(async ([args, re]) => {
      const r = await tune("run", ...args, `output_dir=${dir}/out`);
      assertOneLine(r, re, args.join(" "));
    }));
    // nothing was written: the refusal came before any work
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tune run and validate refuse paths of the wrong kind; run refuses missing inputs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tune_bad_paths_" });
  try {
    const file = `${dir}/a_file`;
    Deno.writeTextFileSync(file, "not a folder");
    const lora = ["lora_finetune_single_device", "--config", "tiny/lora_single_device"];
    const cases: Array<[string[], RegExp]> = [
      [
        [...lora, `output_dir=${file}`],
        /output_dir '.*a_file' is a file, not a folder; name a folder/,
      ],
      [[
        ...lora,
        `output_dir=${dir}/o`,
        "model_init=checkpoint",
        `checkpointer.checkpoint_dir=${file}`,
      ], /checkpointer.checkpoint_dir '.*a_file' is a file, not a folder/],
      [[
        ...lora,
        `output_dir=${dir}/o`,
        "model_init=checkpoint",
        `checkpointer.checkpoint_dir=${dir}/missing`,
      ], /checkpointer.checkpoint_dir '.*missing' does not exist; download the model there/],
      [
        [...lora, `output_dir=${dir}/o`, `dataset.data_files=${dir}`],
        /dataset.data_files '.*' is a folder; name the data file/,
      ],
      [
        [...lora, `output_dir=${dir}/o`, "dataset.data_files=no_such_file.txt"],
        /dataset.data_files 'no_such_file.txt' does not exist/,
      ],
      [
        [...lora, `output_dir=${dir}/o`, "tokenizer.path=no_such.model"],
        /tokenizer.path 'no_such.model' does not exist/,
      ],
    ];
    for (const verb of ["run", "validate"]) {
      await Promise.all(cases.map(async ([args, re]) => {
        const missing = /does not exist/.test(re.source);
        const r = await tune(verb, ...args);
        if (verb === "validate" && missing) {
          // a config may be validated before its model is downloaded: a note, exit 0
          assert.equal(r.code, 0, r.stderr);
          assert.match(r.stdout, new RegExp(`note: .*${re.source}`));
        } else assertOneLine(r, re, `${verb} ${args.slice(3).join(" ")}`);
      }));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
