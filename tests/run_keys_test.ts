/**
 * torchtune's run-wide keys (src/config/run_keys.ts) in every recipe: log_level changes what
 * tune prints; parallelism layouts tune cannot honour, profiler.enabled=True, low_cpu_ram
 * and fsdp.cpu_offload are refused in one line; LinearCrossEntropyLoss is the chunked loss;
 * the profiler section traces the scheduled steps without changing them.
 */
import assert from "node:assert/strict";
import { findRecipe } from "../recipes/registry.ts";
import { instantiate } from "../src/config/instantiate.ts";
import { loadRecipeConfig } from "../src/config/load.ts";
import { defaultLaunchOptions } from "../src/config/recipe.ts";
import { parseOverrides } from "../src/config/overrides.ts";
import type { ComponentSection } from "../src/config/schema.ts";
import type { CrossEntropyLoss } from "../src/optim/loss.ts";

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

const EVAL = ["run", "eval", "--config", "tiny/eval"];

Deno.test("log_level: DEBUG prints the resolved config, WARNING drops the setup lines", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tune_log_level_" });
  try {
    const debug = await tune(...EVAL, `output_dir=${dir}`, "log_level=DEBUG");
    assert.equal(debug.code, 0, debug.stderr);
    assert.match(debug.stderr, /tune: running eval/);
    assert.match(debug.stderr, /tune: resolved config:\n[\s\S]*batch_size: 8/);
    const info = await tune(...EVAL, `output_dir=${dir}`);
    assert.match(info.stderr, /tune: running eval/);
    assert.doesNotMatch(info.stderr, /resolved config/);
    const warning = await tune(...EVAL, `output_dir=${dir}`, "log_level=WARNING");
    assert.equal(warning.code, 0, warning.stderr);
    assert.doesNotMatch(warning.stderr, /tune: running/);
    assert.equal(warning.stdout, info.stdout, "the results are the same");
    // a training run at WARNING: no "saved" lines; at INFO they are there
    const lora = ["run", "lora_finetune_single_device", "--config", "tiny/lora_single_device"];
    const short = ["epochs=1", "max_steps_per_epoch=2", "save_every_n_steps=1"];
    const quiet = await tune(...lora, ...short, `output_dir=${dir}/w`, "log_level=WARNING");
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.doesNotMatch(quiet.stderr, /^saved /m);
    const loud = await tune(...lora, ...short, `output_dir=${dir}/i`);
    assert.match(loud.stderr, /^saved /m);
    const bad = await tune(...EVAL, "log_level=LOUD");
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /wrong type for 'log_level': expected one of DEBUG\|INFO/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("run keys tune cannot honour are refused in one line before any work", async () => {
  const lora = ["run", "lora_finetune_single_device", "--config", "tiny/lora_single_device"];
  const cases: Array<[string[], RegExp]> = [
    [["tensor_parallel_dim=2"], /tensor_parallel_dim=2 is not supported: .*shards parameters/],
    [["data_parallel_replicate_dim=2"], /data_parallel_replicate_dim=2 is not supported/],
    [["data_parallel_shard_dim=4"], /data_parallel_shard_dim=4 does not match the 1 process/],
    [
      ["profiler._component_=torchtune.training.setup_torch_profiler", "profiler.with_flops=True"],
      /profiler.with_flops=True is not supported/,
    ],
    [["low_cpu_ram=True"], /low_cpu_ram=True is not supported/],
    [["fsdp.cpu_offload=True"], /fsdp.cpu_offload=True is not supported/],
  ];
  await Promise.all(cases.map(async ([overrides, re]) => {
    const r = await tune(...lora, "output_dir=/nonexistent/never_written", ...overrides);
    assert.equal(r.code, 1, `${overrides}: ${r.stderr}`);
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], re);
  }));
  // the values torchtune's configs carry are accepted
  const ok = await tune(
    "validate",
    "--config",
    "tiny/lora_single_device",
    "tensor_parallel_dim=1",
    "data_parallel_shard_dim=-1",
    "data_parallel_replicate_dim=1",
    "profiler._component_=torchtune.training.setup_torch_profiler",
    "profiler.enabled=False",
    "low_cpu_ram=False",
    "fsdp.cpu_offload=False",
    "log_level=INFO",
  );
  assert.equal(ok.code, 0, ok.stderr);
});

Deno.test("LinearCrossEntropyLoss resolves to the chunked loss head with torchtune's defaults", () => {
  const recipe = findRecipe("lora_finetune_single_device", defaultLaunchOptions());
  const { config } = loadRecipeConfig(
    recipe,
    "tiny/lora_single_device",
    parseOverrides(["loss._component_=torchtune.modules.loss.LinearCrossEntropyLoss"]),
  );
  const loss = instantiate<CrossEntropyLoss>(config.loss as ComponentSection);
  assert.deepEqual(loss, { kind: "cross_entropy", ignoreIndex: -100, numOutputChunks: 8 });
});

Deno.test("profiler: the scheduled steps are traced per op and the losses do not change", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tune_profiler_" });
  try {
    const lora = ["run", "lora_finetune_single_device", "--config", "tiny/lora_single_device"];
    const short = ["epochs=1", "max_steps_per_epoch=5"];
    const plain = await tune(...lora, ...short, `output_dir=${dir}/plain`);
    assert.equal(plain.code, 0, plain.stderr);
    const traced = await tune(
      ...lora,
      ...short,
      `output_dir=${dir}/traced`,
      "profiler._component_=torchtune.training.setup_torch_profiler",
      "profiler.enabled=True",
      "profiler.wait_steps=1",
      "profiler.warmup_steps=1",
      "profiler.active_steps=2",
      "profiler.profile_memory=True",
      "profiler.with_stack=True",
    );
    assert.equal(traced.code, 0, traced.stderr);
    assert.match(traced.stderr, /profile: .*rank0_cycle0_trace\.json/);
    const losses = (p: string) =>
      Deno.readTextFileSync(`${dir}/${p}/metrics.jsonl`).trim().split("\n").map((l) =>
        JSON.parse(l).loss
      );
    assert.deepEqual(losses("traced"), losses("plain"), "tracing changes no number");
    const out = `${dir}/traced/profiling_outputs`;
    const trace = JSON.parse(Deno.readTextFileSync(`${out}/rank0_cycle0_trace.json`));
    const spans = trace.traceEvents.filter((e: { ph: string }) => e.ph === "X");
    const names = new Set(spans.map((e: { name: string }) => e.name));
    assert.ok(
      names.has("matmul") || [...names].some((n) => /matmul|gemm/i.test(String(n))),
      [
        ...names,
      ].join(","),
    );
    assert.ok(spans.every((e: { args?: { stack?: string[] } }) => e.args?.stack?.length));
    assert.ok(trace.traceEvents.some((e: { ph: string }) => e.ph === "C"), "memory counter");
    assert.match(Deno.readTextFileSync(`${out}/rank0_cycle0_ops.txt`), /^op\s+calls\s+ms\s+share/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("WandBLogger validates (torchtune's configs name it) and is refused in one line at run", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tune_wandb_" });
  try {
    const wandb = "metric_logger._component_=torchtune.training.metric_logging.WandBLogger";
    const lora = ["lora_finetune_single_device", "--config", "tiny/lora_single_device"];
    const v = await tune("validate", ...lora.slice(1), wandb, "metric_logger.project=x");
    assert.equal(v.code, 0, v.stderr);
    const r = await tune("run", ...lora, `output_dir=${dir}`, wandb);
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.trimEnd().split("\n").filter((l) => !l.startsWith("tune: running"));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /WandBLogger is not available .* use .*TensorBoardLogger/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
