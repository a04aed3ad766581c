/**
 * The `tune` command line: argument parsing (launcher flags, torchtune's early forms) and
 * the CLI run as a subprocess on bad input (one line on stderr, exit code 1, no stack).
 */
import assert from "node:assert/strict";
import { type CliCommand, parseArgv } from "../src/config/argv.ts";
import { CliText, type Override } from "../src/config/overrides.ts";
import { TuneError } from "../src/errors.ts";
import { canonicalRecipeName, findRecipe } from "../recipes/registry.ts";

const ROOT = new URL("../", import.meta.url);

type Run = Extract<CliCommand, { kind: "run" }>;

function parseRun(argv: string[]): Run {
  const cmd = parseArgv(argv);
  assert.equal(cmd.kind, "run");
  return cmd as Run;
}

/** Overrides as plain key/value pairs for comparison. */
function pairs(overrides: Override[]): Array<[string, string]> {
  return overrides.map((
    o,
  ) => [
    o.key,
    o.op === "delete" ? "~" : (o.value instanceof CliText ? o.value.text : String(o.value)),
  ]);
}

Deno.test("parseArgv() reads launcher flags before the recipe into a typed object", () => {
  const cmd = parseRun([
    "run",
    "--nnodes",
    "2",
    "--nproc_per_node=4",
    "--node_rank",
    "1",
    "--master_addr",
    "10.0.0.1",
    "--master-port",
    "29501",
    "lora_finetune_distributed",
    "--config",
    "tiny/lora_distributed",
    "batch_size=4",
  ]);
  assert.deepEqual(
    { ...cmd.launch },
    {
      nnodes: 2,
      nprocPerNode: 4,
      nodeRank: 1,
      masterAddr: "10.0.0.1",
      masterPort: 29501,
      explicit: true,
      recipeArgv: [],
    },
  );
  assert.equal(cmd.recipe, "lora_finetune_distributed");
  assert.equal(cmd.config, "tiny/lora_distributed");
  assert.deepEqual(pairs(cmd.overrides), [["batch_size", "4"]]);
  assert.deepEqual(cmd.recipeArgs, ["--config", "tiny/lora_distributed", "batch_size=4"]);
});

Deno.test("parseArgv() gives torchtune's early README form the same recipe and parameters as tune run", () => {
  const early = parseRun([
    "--nnodes",
    "1",
    "--nproc_per_node",
    "2",
    "lora_finetune_distributed",
    "--config",
    "alpaca_llama2_lora_finetune_distributed",
    "--override",
    "lora_attn_modules=q_proj,k_proj,v_proj",
    "lora_rank=4",
  ]);
  const modern = parseRun([
    "run",
    "--nnodes",
    "1",
    "--nproc_per_node",
    "2",
    "lora_finetune_distributed",
    "--config",
    "alpaca_llama2_lora_finetune_distributed",
    "lora_attn_modules=q_proj,k_proj,v_proj",
    "lora_rank=4",
  ]);
  assert.deepEqual({ ...early, viaRun: true }, modern);
  assert.equal(early.viaRun, false);
  assert.equal(early.launch.nprocPerNode, 2);
  // The top-level keys reach the model section through the recipe's documented aliases.
  const recipe = findRecipe(early.recipe, early.launch);
  assert.equal(recipe.keyAliases.lora_rank, "model.lora_rank");
  assert.equal(recipe.keyAliases.lora_attn_modules, "model.lora_attn_modules");
});

Deno.test("canonicalRecipeName() maps finetune_llm by launch: distributed with launcher flags", () => {
  const withFlags = parseRun([
    "--nnodes",
    "1",
    "--nproc_per_node",
    "4",
    "finetune_llm",
    "--config",
    "alpaca_llama2_finetune",
  ]);
  assert.equal(
    canonicalRecipeName(withFlags.recipe, withFlags.launch),
    "full_finetune_distributed",
  );
  const without = parseRun(["finetune_llm", "--config", "alpaca_llama2_finetune"]);
  assert.equal(canonicalRecipeName(without.recipe, without.launch), "full_finetune_single_device");
  assert.equal(
    canonicalRecipeName("lora_finetune_multi_gpu", without.launch),
    "lora_finetune_distributed",
  );
});

Deno.test("parseArgv() maps tune alpaca_generate flags to the generate recipe", () => {
  const cmd = parseRun([
    "alpaca_generate",
    "--native-checkpoint-path",
    "/tmp/llama2-7b/consolidated.00.pth",
    "--tokenizer-path",
    "/tmp/llama2-7b/tokenizer.model",
    "--input",
    "Tell me, briefly, about llamas.",
  ]);
  assert.equal(cmd.recipe, "generate");
  assert.equal(cmd.config, "alpaca_llama2_generate");
  assert.deepEqual(pairs(cmd.overrides), [
    ["checkpointer.checkpoint_dir", "/tmp/llama2-7b"],
    ["checkpointer.checkpoint_files", "[consolidated.00.pth]"],
    ["tokenizer.path", "/tmp/llama2-7b/tokenizer.model"],
    ["prompt", "Tell me, briefly, about llamas."],
  ]);
  const modern = parseRun([
    "run",
    "generate",
    "--config",
    "alpaca_llama2_generate",
    "checkpointer.checkpoint_dir=/tmp/llama2-7b",
    "checkpointer.checkpoint_files=[consolidated.00.pth]",
    "tokenizer.path=/tmp/llama2-7b/tokenizer.model",
    "prompt=Tell me, briefly, about llamas.",
  ]);
  assert.deepEqual({ ...cmd, viaRun: true }, modern);
  const withConfig = parseRun([
    "alpaca_generate",
    "--config",
    "llama2c/generate",
    "--native-checkpoint-path=model.bin",
    "--prompt",
    "hi",
  ]);
  assert.equal(withConfig.config, "llama2c/generate");
  assert.deepEqual(pairs(withConfig.overrides).slice(0, 2), [
    ["checkpointer.checkpoint_dir", "."],
    ["checkpointer.checkpoint_files", "[model.bin]"],
  ]);
});

Deno.test("parseArgv() parses ls, cp, cat and validate", () => {
  assert.deepEqual(parseArgv(["ls"]), { kind: "ls" });
  assert.deepEqual(parseArgv(["cp", "-n", "llama2/7B_full", "my.yaml"]), {
    kind: "cp",
    source: "llama2/7B_full",
    dest: "my.yaml",
    noClobber: true,
    makeParents: false,
  });
  const cat = parseArgv(["cat", "tiny/eval", "batch_size=3", "~seed"]);
  assert.equal(cat.kind, "cat");
  assert.deepEqual(pairs((cat as Extract<CliCommand, { kind: "cat" }>).overrides), [
    ["batch_size", "3"],
    ["seed", "~"],
  ]);
  assert.deepEqual(parseArgv(["validate", "--config", "x.yaml"]), {
    kind: "validate",
    recipe: undefined,
    config: "x.yaml",
    overrides: [],
  });
  const v = parseArgv(["validate", "eval", "--config=tiny/eval"]);
  assert.equal((v as Extract<CliCommand, { kind: "validate" }>).recipe, "eval");
  assert.equal((parseArgv(["validate", "my.yaml"]) as { config: string }).config, "my.yaml");
});

Deno.test("parseArgv() rejects bad launcher values and unknown options with a TuneError", () => {
  const bad = (argv: string[], re: RegExp) =>
    assert.throws(() => parseArgv(argv), (e) => e instanceof TuneError && re.test(e.message));
  bad(
    ["--nproc_per_node", "two", "run", "eval"],
    /--nproc_per_node expects an integer >= 1, got 'two'/,
  );
  bad(["run", "--master_port", "70000", "eval"], /from 1 to 65535/);
  bad(
    ["run", "--nnodes", "2", "--node_rank", "2", "eval"],
    /--node_rank 2 must be below --nnodes 2/,
  );
  bad(["run", "eval", "--config", "x", "--fsdp", "True"], /unknown option '--fsdp'/);
  bad(["--nproc_per_node", "2", "ls"], /launcher flags do not apply/);
  bad(["--bogus", "run"], /unknown option '--bogus'/);
});

/** Run `deno run -A cli.ts ...args` from the repo root. */
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

/** Bad input: exit code not 0, exactly one line on stderr starting `tune: `, no stack trace. */
function assertOneLineError(r: { code: number; stderr: string }, re: RegExp): void {
  assert.notEqual(r.code, 0);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.ok(lines[0].startsWith("tune: "), lines[0]);
  assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
  assert.match(lines[0], re);
}

Deno.test("tune ls lists every recipe with its configs", async () => {
  const r = await tune("ls");
  assert.equal(r.code, 0, r.stderr);
  for (
    const name of [
      "lora_finetune_single_device",
      "full_finetune_single_device",
      "lora_finetune_distributed",
      "full_finetune_distributed",
      "generate",
      "eval",
      "llama2/7B_lora_single_device",
      "tiny/lora_single_device",
      "alpaca_llama2_lora_finetune_distributed",
      "finetune_llm -> full_finetune_single_device",
    ]
  ) assert.ok(r.stdout.includes(name), `tune ls shows ${name}`);
});

Deno.test("tune run/validate print one line and exit 1 for each kind of bad input", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tune_cli_test_" });
  try {
    const malformed = `${dir}/bad.yaml`;
    await Deno.writeTextFile(malformed, "batch_size: 2\nmodel: [a, b\nseed: 1\n");
    const badComponent = `${dir}/component.yaml`;
    await Deno.writeTextFile(
      badComponent,
      "prompt: hi\nmodel:\n  _component_: torchtune.models.llama2.lama2_7b\n",
    );
    const cases: Array<[string[], RegExp]> = [
      [
        [
          "run",
          "lora_finetune_single_device",
          "--config",
          "tiny/lora_single_device",
          "batch_sise=3",
        ],
        /unknown key 'batch_sise' for recipe lora_finetune_single_device; did you mean 'batch_size'\?/,
      ],
      [
        ["validate", "--config", "tiny/lora_single_device", "batch_size=abc"],
        /wrong type for 'batch_size': expected int, got 'abc'/,
      ],
      [
        ["run", "eval", "--config", "no/such_config"],
        /config 'no\/such_config' not found: no file \S*no\/such_config .*; tune ls lists the shipped configs/,
      ],
      [
        ["run", "eval", "--config", malformed],
        new RegExp(`malformed YAML in ${malformed} at line 3`),
      ],
      [
        ["validate", "generate", "--config", badComponent],
        /unknown _component_ 'torchtune.models.llama2.lama2_7b' at 'model._component_'; did you mean/,
      ],
      [
        ["run", "lora_finetune_singel_device"],
        /unknown recipe .*did you mean 'lora_finetune_single_device'/,
      ],
      [["lss"], /unknown command or recipe 'lss'; did you mean 'ls'\?/],
      [
        ["rnu", "lora_finetune_single_device", "--config", "tiny/lora_single_device"],
        /unknown command or recipe 'rnu'; did you mean 'run'\?/,
      ],
      [
        ["validate", "--config", "tiny/lora_single_devic"],
        /config 'tiny\/lora_single_devic' not found: .*did you mean 'tiny\/lora_single_device'\?/,
      ],
      [
        ["validate", "--config", "alpaca_llama2_lora_finetune_distributed", "lora_rnak=4"],
        /unknown key 'lora_rnak' .*did you mean 'lora_rank'\?/,
      ],
      [
        ["validate", "--config", "tiny/lora_single_device", "lora_dropot=0.1"],
        /unknown key 'lora_dropot' .*did you mean 'model.lora_dropout'\?/,
      ],
      // A bad config fails once, in the launcher, before any process starts.
      [
        ["run", "--nproc_per_node", "2", "eval", "--config", "tiny/eval", "batch_sise=1"],
        /unknown key 'batch_sise' for recipe eval; did you mean 'batch_size'\?/,
      ],
    ];
    for (const [args, re] of cases) assertOneLineError(await tune(...args), re);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tune cat prints a config with overrides applied, parsed by declared type", async () => {
  const r = await tune(
    "cat",
    "tiny/lora_single_device",
    "batch_size=7",
    "lora_rank=16",
    "optimizer.lr=2e-5",
    "~clip_grad_norm",
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^batch_size: 7$/m);
  assert.match(r.stdout, /^ {2}lora_rank: 16$/m, "the alias reached model.lora_rank");
  assert.match(r.stdout, /^ {2}lr: 0.00002$/m);
  assert.doesNotMatch(r.stdout, /clip_grad_norm/);
});

Deno.test("tune cp copies a shipped config and a recipe, adding the extension", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tune_cp_test_" });
  try {
    const r = await tune("cp", "tiny/lora_single_device", `${dir}/mine`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      await Deno.readTextFile(`${dir}/mine.yaml`),
      await Deno.readTextFile(new URL("configs/tiny/lora_single_device.yaml", ROOT)),
    );
    const r2 = await tune("cp", "lora_finetune_single_device", dir);
    assert.equal(r2.code, 0, r2.stderr);
    assert.ok((await Deno.stat(`${dir}/lora_finetune_single_device.ts`)).isFile);
    assertOneLineError(
      await tune("cp", "tiny/lora_single_device", `${dir}/a/b.yaml`),
      /--make-parents/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A recipe file of the user's that writes what `main` received to `<out_dir>/rank<RANK>.json`. */
function userRecipeSource(): string {
  const src = new URL("../src/", import.meta.url).href;
  return `import type { ParamSchema } from "${src}config/schema.ts";
export const params = {
  out_dir: { type: "string", required: true, doc: "where to write" },
  lora_rank: { type: "int", default: 8, doc: "a number" },
  words: { type: "string[]", default: ["a"], doc: "a list" },
} satisfies ParamSchema;
export const keyAliases = { rank: "lora_rank" };
export async function main(cfg: Record<string, unknown>, launch: Record<string, unknown>) {
  const rank = Deno.env.get("RANK") ?? "0";
  await Deno.writeTextFile(\`\${cfg.out_dir}/rank\${rank}.json\`, JSON.stringify({ cfg, launch, world: Deno.env.get("WORLD_SIZE") ?? null }));
}
`;
}

Deno.test("tune run calls a recipe file's main with the resolved config and launch options", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tune_run_test_" });
  try {
    await Deno.writeTextFile(`${dir}/my_recipe.ts`, userRecipeSource());
    await Deno.writeTextFile(`${dir}/my.yaml`, `out_dir: ${dir}\nwords: [x, y]\n`);
    const r = await tune("run", `${dir}/my_recipe.ts`, "--config", `${dir}/my.yaml`, "rank=4");
    assert.equal(r.code, 0, r.stderr);
    const got = JSON.parse(await Deno.readTextFile(`${dir}/rank0.json`));
    // the recipe's own keys, then torchtune's run-wide keys every recipe accepts
    const { out_dir, lora_rank, words, log_level, ...runKeys } = got.cfg;
    assert.deepEqual({ out_dir, lora_rank, words }, {
      out_dir: dir,
      lora_rank: 4,
      words: ["x", "y"],
    });
    assert.equal(log_level, "INFO");
    assert.equal(runKeys.tensor_parallel_dim, 1);
    assert.equal(got.launch.explicit, false);
    assert.equal(got.launch.nprocPerNode, 1);
    assert.deepEqual(got.launch.recipeArgv, [
      `${dir}/my_recipe.ts`,
      "--config",
      `${dir}/my.yaml`,
      "rank=4",
    ]);
    assert.equal(got.world, null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tune run --nproc_per_node 2 starts one process per rank, each calling main once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tune_launch_test_" });
  try {
    await Deno.writeTextFile(`${dir}/my_recipe.ts`, userRecipeSource());
    await Deno.writeTextFile(`${dir}/my.yaml`, `out_dir: ${dir}\n`);
    // A port no other test is using (the launcher also moves off a busy one by itself).
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (probe.addr as Deno.NetAddr).port;
    probe.close();
    const r = await tune(
      "--nnodes",
      "1",
      "--nproc_per_node",
      "2",
      "--master_port",
      String(port),
      "run",
      `${dir}/my_recipe.ts`,
      "--config",
      `${dir}/my.yaml`,
      "words=p,q",
    );
    assert.equal(r.code, 0, r.stderr);
    const files = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.startsWith("rank"));
    assert.deepEqual(files.sort(), ["rank0.json", "rank1.json"]);
    for (const rank of [0, 1]) {
      const got = JSON.parse(await Deno.readTextFile(`${dir}/rank${rank}.json`));
      assert.deepEqual(got.cfg.words, ["p", "q"]);
      assert.equal(got.world, "2");
      assert.equal(got.launch.nprocPerNode, 2);
      assert.equal(got.launch.explicit, true);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tune validate accepts a shipped config by name, with or without .yaml", async () => {
  const r = await tune("validate", "--config", "tiny/lora_single_device.yaml", "lora_rank=2");
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    /Config is well-formed: tiny\/lora_single_device for recipe lora_finetune_single_device/,
  );
  const both = await tune("validate", "alpaca_llama2_finetune");
  assert.equal(both.code, 0, both.stderr);
  assert.match(both.stdout, /for recipe full_finetune_single_device/);
  assert.match(both.stdout, /for recipe full_finetune_distributed/);
});

Deno.test("parseArgv() turns --help into the usage, or a recipe's parameters after its name", () => {
  assert.deepEqual(parseArgv(["--help"]), { kind: "help" });
  assert.deepEqual(parseArgv(["cat", "-h"]), { kind: "help" });
  assert.deepEqual(parseArgv(["run", "--nproc_per_node", "2", "eval", "--help"]), {
    kind: "help",
    recipe: "eval",
  });
  assert.deepEqual(parseArgv(["finetune_llm", "-h"]), { kind: "help", recipe: "finetune_llm" });
});

Deno.test("tune run <recipe> --help lists every declared parameter with type and default", async () => {
  const r = await tune("run", "generate", "--help");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^ {2}max_new_tokens +int +default 300 +\S/m);
  assert.match(r.stdout, /^ {2}device +string \(cpu\|cuda\) +default "cpu"/m);
  assert.match(r.stdout, /^ {2}tokenizer +tokenizer component +required/m);
});
