/**
 * The distributed recipes (full_finetune_distributed, lora_finetune_distributed) run as
 * the real CLI in subprocesses on the CPU, 2 ranks over loopback TCP:
 * - per-step losses equal the single-device recipe with the same global batch (relative
 *   1e-5), and the final checkpoints hold the same weights (fp32: atol 1e-5, rtol 1e-4);
 * - each rank's AdamW state is exactly half the single-process size;
 * - `tune --nnodes 1 --nproc_per_node 2 lora_finetune_distributed --config
 *   alpaca_llama2_lora_finetune_distributed --override ...` runs with a tiny model and data
 *   and matches the single-device recipe;
 * - resuming a 2-rank run gives bitwise the losses of the uninterrupted 2-rank run, and the
 *   single-device recipe resumes a 2-rank run's checkpoint;
 * - SIGKILL of rank 1 mid-run makes rank 0 exit non-zero within 30 s naming rank 1, and
 *   every checkpoint file on disk is complete (no temporary files left); a hung rank 1
 *   (SIGSTOP) is named after TUNE_DIST_TIMEOUT;
 * - where libcuda, a GPU and libnccl are present: device=cuda over NCCL (one rank per GPU,
 *   up to 2) matches the single-device recipe on cuda (relative 1e-5), with dtype fp32 and
 *   bf16, and the bf16 recipes follow the fp32 ones (relative 1e-2).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadRecipeState } from "../src/checkpoint/recipe_state.ts";
import { readSafetensors } from "../src/checkpoint/safetensors.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import { gpuCount, ncclPresent } from "./_gpu_probe.ts";

const ROOT = new URL("../", import.meta.url);

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** `deno run -A cli.ts <args>` from the repo root (configs' relative paths resolve there). */
async function tune(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli.ts", ...args],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function runOk(...args: string[]): Promise<Run> {
  const r = await tune(args);
  assert.equal(r.code, 0, `tune ${args.join(" ")} failed:\n${r.stderr}`);
  return r;
}

type Metrics = Array<Record<string, number>>;

function readMetrics(dir: string): Metrics {
  return Deno.readTextFileSync(join(dir, "metrics.jsonl")).split("\n").filter((l) => l)
    .map((l) => JSON.parse(l));
}

/** Per-step losses equal within relative `rtol`; prints the worst relative difference. */
function assertSameLosses(label: string, actual: Metrics, expected: Metrics, rtol: number): void {
  assert.equal(actual.length, expected.length, `${label}: number of steps`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    assert.equal(actual[i].step, expected[i].step);
    assert.equal(actual[i].tokens, expected[i].tokens, `${label}: global tokens of step ${i + 1}`);
    const rel = Math.abs(actual[i].loss - expected[i].loss) / Math.abs(expected[i].loss);
    worst = Math.max(worst, rel);
  }
  console.log(
    `${label}: losses ${actual.map((m) => m.loss.toFixed(6)).join(" ")}; ` +
      `worst relative diff vs single device ${worst.toExponential(2)} (rtol ${rtol})`,
  );
  assert.ok(worst <= rtol, `${label}: losses differ by ${worst} (relative) > ${rtol}`);
}

/** Same tensor names and shapes, values within atol + rtol * |expected|. */
function assertSameWeights(label: string, actual: StateDict, expected: StateDict): void {
  const atol = 1e-5, rtol = 1e-4;
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort(), `${label}: tensors`);
  let worst = 0;
  let where = "";
  for (const [name, e] of expected) {
    const a = actual.get(name)!;
    assert.deepEqual(a.shape, e.shape, `${label}: shape of ${name}`);
    for (let i = 0; i < e.data.length; i++) {
      const excess = Math.abs(a.data[i] - e.data[i]) - rtol * Math.abs(e.data[i]);
      if (excess > worst) [worst, where] = [excess, `${name}[${i}]`];
    }
  }
  console.log(
    `${label}: final weights, worst |diff| - rtol*|ref| = ${worst.toExponential(2)} ${where} ` +
      `(atol ${atol}, rtol ${rtol})`,
  );
  assert.ok(worst <= atol, `${label}: weights differ at ${where} by ${worst}`);
}

/** The "rank R/W (pid P): optimizer state B bytes ... one process: F bytes" lines. */
function optimizerLines(stderr: string): Map<number, { bytes: number; full: number }> {
  const out = new Map<number, { bytes: number; full: number }>();
  const re = /rank (\d+)\/2 \(pid \d+\): optimizer state (\d+) bytes .*one process: (\d+) bytes/g;
  for (const m of stderr.matchAll(re)) {
    out.set(Number(m[1]), { bytes: Number(m[2]), full: Number(m[3]) });
  }
  return out;
}

/** The single-device run's optimizer bytes from log_peak_memory_stats. */
function singleOptimizerBytes(stderr: string): number {
  const m = stderr.match(/memory \(bytes\): (\{.*\})/);
  assert.ok(m, `single-device run printed its memory:\n${stderr}`);
  return JSON.parse(m[1]).optimizer;
}

function assertHalfOptimizer(label: string, distStderr: string, single: number): void {
  const ranks = optimizerLines(distStderr);
  assert.deepEqual([...ranks.keys()].sort(), [0, 1], `${label}: both ranks report their state`);
  for (const [r, { bytes, full }] of ranks) {
    console.log(`${label}: rank ${r} optimizer state ${bytes} bytes; single process ${single}`);
    assert.equal(full, single, `${label}: rank ${r} knows the single-process size`);
    assert.equal(bytes * 2, single, `${label}: rank ${r} holds half the optimizer state`);
  }
}

/**
 * ZeRO-3: each rank's resident trainable values + gradients (its fp32 slices plus the
 * group-sized compute buffers, from the "trainable params+grads resident" lines) are about
 * 1/world of one process's plus one group: slices between full/W and full/W + padding, the
 * compute buffers at least one group (values and gradients) and at most two.
 */
function assertZero3Memory(label: string, stderr: string, world: number, groups: number): void {
  const re = new RegExp(
    `rank (\\d+)/${world}: trainable params\\+grads resident (\\d+) bytes \\(slices (\\d+) ` +
      `\\+ group buffers (\\d+); largest group (\\d+); one process: (\\d+) bytes\\)`,
    "g",
  );
  const seen = [...stderr.matchAll(re)];
  assert.equal(seen.length, world, `${label}: every rank reports its resident params+grads`);
  for (const m of seen) {
    const [resident, slices, buffers, largest, full] = m.slice(2).map(Number);
    console.log(
      `${label}: rank ${m[1]} params+grads ${resident} bytes (slices ${slices} + group buffers ` +
        `${buffers}); one process ${full} bytes; ratio ${(resident / full).toFixed(3)}`,
    );
    assert.equal(resident, slices + buffers);
    // padding: at most world-1 elements (8 bytes of value and gradient each) per group
    assert.ok(slices * world >= full && slices * world <= full + groups * (world - 1) * 8 * world);
    assert.ok(buffers >= largest && buffers <= 2 * largest, `${label}: one group's buffers`);
    assert.ok(resident <= full / world + 2 * largest, `${label}: about 1/world + one group`);
  }
}

/** Metrics records without their wall-clock field, for bitwise comparison. */
function timeless(m: Metrics): string {
  return m.map(({ tokens_per_s: _t, ...rest }) => JSON.stringify(rest)).join("\n");
}

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tune_dist_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const SHORT = ["epochs=2", "max_steps_per_epoch=3", "seed=0"];

Deno.test("full_finetune_distributed on 2 ranks matches full_finetune_single_device with the same global batch", async () => {
  await withTmp(async (dir) => {
    const one = join(dir, "one"), two = join(dir, "two");
    const s = await runOk(
      "run",
      "full_finetune_single_device",
      "--config",
      "tiny/full_single_device",
      `output_dir=${one}`,
      "log_peak_memory_stats=True",
      ...SHORT,
    );
    // tiny/full_distributed: batch_size 2 per rank, 2 ranks = the single-device batch of 4
    const d = await runOk(
      "run",
      "--nproc_per_node",
      "2",
      "full_finetune_distributed",
      "--config",
      "tiny/full_distributed",
      `output_dir=${two}`,
      ...SHORT,
    );
    assertSameLosses("full", readMetrics(two), readMetrics(one), 1e-5);
    // Stop mid-epoch 0 after step 2, resume on 2 ranks: the same records bitwise.
    const cut = join(dir, "cut");
    const cfg = ["--config", "tiny/full_distributed", `output_dir=${cut}`, ...SHORT];
    const dist = ["run", "--nproc_per_node", "2", "full_finetune_distributed"];
    await runOk(...dist, ...cfg, "stop_after_steps=2");
    await runOk(...dist, ...cfg, "resume_from_checkpoint=True");
    assert.equal(timeless(readMetrics(cut)), timeless(readMetrics(two)), "resumed run's metrics");
    console.log("full: stop after step 2 + resume on 2 ranks = uninterrupted run, bitwise");
    assertSameWeights(
      "full",
      readSafetensors(join(two, "epoch_1", "model.safetensors")),
      readSafetensors(join(one, "epoch_1", "model.safetensors")),
    );
    // the gathered recipe state is the single-device one (weights and both moments)
    assertSameWeights(
      "full recipe state",
      loadRecipeState(join(two, "recipe_state")).tensors,
      loadRecipeState(join(one, "recipe_state")).tensors,
    );
    assertHalfOptimizer("full", d.stderr, singleOptimizerBytes(s.stderr));
    // tok_embeddings, 2 layers, head
    assertZero3Memory("full", d.stderr, 2, 4);
    const single = JSON.parse(s.stderr.match(/memory \(bytes\): (\{.*\})/)![1]);
    console.log(
      `full: single process params+grads ${single.parameters + single.gradients} bytes`,
    );
  });
});

Deno.test("full_finetune_distributed on 3 ranks (layer groups not divisible by 3) matches full_finetune_single_device", async () => {
  await withTmp(async (dir) => {
    const one = join(dir, "one"), three = join(dir, "three");
    const short = ["epochs=1", "max_steps_per_epoch=3", "seed=0"];
    await runOk(
      "run",
      "full_finetune_single_device",
      "--config",
      "tiny/full_single_device",
      `output_dir=${one}`,
      "batch_size=3",
      ...short,
    );
    const d = await runOk(
      "run",
      "--nproc_per_node",
      "3",
      "full_finetune_distributed",
      "--config",
      "tiny/full_distributed",
      `output_dir=${three}`,
      "batch_size=1",
      ...short,
    );
    assertSameLosses("full, 3 ranks", readMetrics(three), readMetrics(one), 1e-5);
    assertSameWeights(
      "full, 3 ranks",
      readSafetensors(join(three, "epoch_0", "model.safetensors")),
      readSafetensors(join(one, "epoch_0", "model.safetensors")),
    );
    // each rank owns ceil(group / 3) of every group: a third, plus at most 2 per group
    const re = /rank (\d)\/3 \(pid \d+\): optimizer state (\d+) bytes .*one process: (\d+) bytes/g;
    const seen = [...d.stderr.matchAll(re)];
    assert.equal(seen.length, 3, "every rank reports its optimizer state");
    for (const m of seen) {
      const [bytes, full] = [Number(m[2]), Number(m[3])];
      console.log(`full, 3 ranks: rank ${m[1]} optimizer state ${bytes} of ${full} bytes`);
      // 4 layer groups, each padded by at most 2 elements (8 bytes of m and v each)
      assert.ok(bytes * 3 >= full && bytes * 3 <= full + 4 * 2 * 8, `rank ${m[1]}: a third`);
    }
    assertZero3Memory("full, 3 ranks", d.stderr, 3, 4);
  });
});

Deno.test("lora_finetune_distributed on 2 ranks matches lora_finetune_single_device; resume is bitwise", async () => {
  await withTmp(async (dir) => {
    const one = join(dir, "one"), two = join(dir, "two"), cut = join(dir, "cut");
    const s = await runOk(
      "run",
      "lora_finetune_single_device",
      "--config",
      "tiny/lora_single_device",
      `output_dir=${one}`,
      "log_peak_memory_stats=True",
      ...SHORT,
    );
    const dist = ["run", "--nproc_per_node", "2", "lora_finetune_distributed"];
    const d = await runOk(
      ...dist,
      "--config",
      "tiny/lora_distributed",
      `output_dir=${two}`,
      ...SHORT,
    );
    const full = readMetrics(two);
    assertSameLosses("lora", full, readMetrics(one), 1e-5);
    assertSameWeights(
      "lora adapter",
      readSafetensors(join(two, "epoch_1", "adapter_model.safetensors")),
      readSafetensors(join(one, "epoch_1", "adapter_model.safetensors")),
    );
    assertSameWeights(
      "lora merged",
      readSafetensors(join(two, "epoch_1", "model.safetensors")),
      readSafetensors(join(one, "epoch_1", "model.safetensors")),
    );
    assertHalfOptimizer("lora", d.stderr, singleOptimizerBytes(s.stderr));
    // adapter groups: 2 layers and the head
    assertZero3Memory("lora", d.stderr, 2, 3);
    // the frozen base: half of it per rank plus one group's buffer
    const fre =
      /rank (\d)\/2: frozen base resident (\d+) bytes \(slices (\d+) \+ group buffers (\d+); largest group (\d+); one process: (\d+) bytes\)/g;
    const frozen = [...d.stderr.matchAll(fre)];
    assert.equal(frozen.length, 2, "both ranks report their frozen base");
    for (const m of frozen) {
      const [resident, slices, buffers, largest, whole] = m.slice(2).map(Number);
      console.log(
        `lora: rank ${m[1]} frozen base ${resident} bytes (slices ${slices} + group buffers ` +
          `${buffers}); one process ${whole} bytes; ratio ${(resident / whole).toFixed(3)}`,
      );
      assert.ok(slices * 2 >= whole && slices * 2 <= whole + 4 * 4 * 2, "lora: half the base");
      assert.ok(buffers >= largest && buffers <= largest + 4 * 2, "lora: one group buffer");
    }

    // Stop mid-epoch 0 after step 2, resume on 2 ranks: the same records bitwise.
    const cfg = ["--config", "tiny/lora_distributed", `output_dir=${cut}`, ...SHORT];
    await runOk(...dist, ...cfg, "stop_after_steps=2");
    assert.equal(readMetrics(cut).length, 2);
    // The gathered recipe state is the single-device format: one process resumes it too.
    const moved = join(dir, "moved");
    const cp = await new Deno.Command("cp", { args: ["-r", cut, moved] }).output();
    assert.equal(cp.code, 0);
    await runOk(
      "run",
      "lora_finetune_single_device",
      "--config",
      "tiny/lora_single_device",
      `output_dir=${moved}`,
      ...SHORT,
      "resume_from_checkpoint=True",
    );
    assertSameLosses("lora, 2 ranks then resumed on 1", readMetrics(moved), readMetrics(one), 1e-5);
    await runOk(...dist, ...cfg, "resume_from_checkpoint=True");
    assert.equal(timeless(readMetrics(cut)), timeless(full), "resumed run's metrics");
    console.log("lora: stop after step 2 + resume on 2 ranks = uninterrupted run, bitwise");
  });
});

Deno.test("lora_dpo_distributed on 2 ranks matches lora_dpo_single_device; resume is bitwise", async () => {
  await withTmp(async (dir) => {
    const one = join(dir, "one"), two = join(dir, "two"), cut = join(dir, "cut");
    const short = ["epochs=2", "max_steps_per_epoch=4"];
    await runOk(
      "run",
      "lora_dpo_single_device",
      "--config",
      "tiny/lora_dpo_single_device",
      `output_dir=${one}`,
      ...short,
    );
    const dist = ["run", "--nproc_per_node", "2", "lora_dpo_distributed"];
    const cfg = ["--config", "tiny/lora_dpo_distributed", ...short];
    await runOk(...dist, ...cfg, `output_dir=${two}`);
    const full = readMetrics(two);
    assertSameLosses("dpo", full, readMetrics(one), 1e-5);
    for (const k of ["rewards/chosen", "rewards/margins", "log_probs/chosen", "logits/rejected"]) {
      const worst = Math.max(
        ...full.map((m, i) => Math.abs(m[k] - readMetrics(one)[i][k])),
      );
      assert.ok(worst <= 1e-4, `dpo: ${k} differs from one device by ${worst}`);
    }
    // AdamW divides by the root of tiny second moments here (DPO gradients near ln 2 are
    // small), so single elements move with rounding; the whole adapter must agree to 1e-4.
    const a = readSafetensors(join(two, "epoch_1", "adapter_model.safetensors"));
    const b = readSafetensors(join(one, "epoch_1", "adapter_model.safetensors"));
    let dd = 0, bb = 0;
    for (const [name, t] of b) {
      const u = a.get(name)!;
      for (let i = 0; i < t.data.length; i++) {
        [dd, bb] = [dd + (u.data[i] - t.data[i]) ** 2, bb + t.data[i] ** 2];
      }
    }
    const rel = Math.sqrt(dd / bb);
    console.log(
      `dpo adapter: relative L2 difference vs one device ${rel.toExponential(2)} (limit 1e-4)`,
    );
    assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
    assert.ok(rel <= 1e-4, `dpo adapter differs from one device: relative L2 ${rel}`);
    // Stop after step 3 (mid-epoch 0), resume on 2 ranks: the same records bitwise.
    await runOk(...dist, ...cfg, `output_dir=${cut}`, "stop_after_steps=3");
    assert.equal(readMetrics(cut).length, 3);
    await runOk(...dist, ...cfg, `output_dir=${cut}`, "resume_from_checkpoint=True");
    assert.equal(timeless(readMetrics(cut)), timeless(full));
  });
});

Deno.test("knowledge_distillation_distributed on 2 ranks matches knowledge_distillation_single_device; resume is bitwise", async () => {
  await withTmp(async (dir) => {
    const one = join(dir, "one"), two = join(dir, "two"), cut = join(dir, "cut");
    await runOk(
      "run",
      "knowledge_distillation_single_device",
      "--config",
      "tiny/kd_single_device",
      `output_dir=${one}`,
      ...SHORT,
    );
    const dist = ["run", "--nproc_per_node", "2", "knowledge_distillation_distributed"];
    const cfg = ["--config", "tiny/kd_distributed", ...SHORT];
    await runOk(...dist, ...cfg, `output_dir=${two}`);
    const full = readMetrics(two), single = readMetrics(one);
    assertSameLosses("kd", full, single, 1e-5);
    for (const k of ["class_loss", "kd_loss"]) {
      const worst = Math.max(...full.map((m, i) => Math.abs(m[k] - single[i][k]) / single[i][k]));
      assert.ok(worst <= 1e-5, `kd: ${k} differs from one device by ${worst} (relative)`);
    }
    assertSameWeights(
      "kd adapter",
      readSafetensors(join(two, "epoch_1", "adapter_model.safetensors")),
      readSafetensors(join(one, "epoch_1", "adapter_model.safetensors")),
    );
    await runOk(...dist, ...cfg, `output_dir=${cut}`, "stop_after_steps=2");
    assert.equal(readMetrics(cut).length, 2);
    await runOk(...dist, ...cfg, `output_dir=${cut}`, "resume_from_checkpoint=True");
    assert.equal(timeless(readMetrics(cut)), timeless(full));
  });
});

Deno.test("the README command `tune --nnodes 1 --nproc_per_node 2 lora_finetune_distributed --config alpaca_llama2_lora_finetune_distributed` runs on the CPU with a tiny model", async () => {
  await withTmp(async (dir) => {
    // Alpaca-format data (instruction, input, output): 20 rows.
    const rows = [];
    for (let a = 0; a < 4; a++) {
      for (let b = 0; b < 4; b++) {
        rows.push({ instruction: "Add the numbers.", input: `${a} ${b}`, output: `${a + b}` });
      }
    }
    for (const c of ["red", "green", "blue", "black"]) {
      rows.push({ instruction: "Name a color.", input: "", output: c });
    }
    const data = join(dir, "alpaca.json");
    Deno.writeTextFileSync(data, JSON.stringify(rows));
    // The config's 7B model, Meta checkpoint, tokenizer, Hub dataset and GPU swapped for
    // tiny local ones; its checkpointer (FullModelMetaCheckpointer) still writes.
    const tiny = [
      "model._component_=tune.models.lora_llama",
      "model.vocab_size=320",
      "model.num_layers=2",
      "model.num_heads=4",
      "model.num_kv_heads=2",
      "model.embed_dim=64",
      "model.intermediate_dim=176",
      "model.max_seq_len=128",
      "model_init=random",
      "seed=0",
      "tokenizer._component_=tune.tokenizers.load",
      "tokenizer.path=tests/fixtures/tokenizer_sp_small.model",
      "tokenizer.max_seq_len=64",
      "dataset.source=json",
      `dataset.data_files=${data}`,
      "device=cpu",
      "dtype=fp32",
      "max_steps_per_epoch=2",
      "gradient_accumulation_steps=2",
      "lr_scheduler.num_warmup_steps=1",
    ];
    const two = join(dir, "two"), one = join(dir, "one");
    const override = ["lora_attn_modules=q_proj,k_proj,v_proj", "lora_rank=4"];
    const d = await runOk(
      "--nnodes",
      "1",
      "--nproc_per_node",
      "2",
      "lora_finetune_distributed",
      "--config",
      "alpaca_llama2_lora_finetune_distributed",
      "--override",
      ...override,
      `output_dir=${two}`,
      ...tiny,
    );
    assert.match(d.stderr, /running lora_finetune_distributed/);
    // The same with one process and the global batch (2 ranks x 2) in one micro-batch.
    await runOk(
      "run",
      "lora_finetune_single_device",
      "--config",
      "alpaca_llama2_lora_finetune_distributed",
      ...override,
      `output_dir=${one}`,
      ...tiny,
      "batch_size=4",
    );
    assertSameLosses("alpaca lora", readMetrics(two), readMetrics(one), 1e-5);
    for (const f of ["adapter_model.safetensors", "consolidated.00.pth", "params.json"]) {
      Deno.statSync(join(two, "epoch_0", f));
    }
    assertSameWeights(
      "alpaca lora adapter",
      readSafetensors(join(two, "epoch_0", "adapter_model.safetensors")),
      readSafetensors(join(one, "epoch_0", "adapter_model.safetensors")),
    );
  });
});

/** Lines of a child's stream, as they come. */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buf = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let i;
    while ((i = buf.search(/[\r\n]/)) >= 0) {
      yield buf.slice(0, i);
      buf = buf.slice(i + 1);
    }
  }
  if (buf) yield buf;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * Start 2 ranks of full_finetune_distributed as torchrun would (no launcher in between, so
 * rank 0 must notice by itself), with a checkpoint every step and far more steps than run
 * before `signal` reaches rank 1 just after rank 0's first save. Rank 0 must exit non-zero
 * within 30 s naming rank 1, and every checkpoint file on disk must be complete.
 */
async function loseRank1(signal: "SIGKILL" | "SIGSTOP", env: Record<string, string> = {}) {
  await withTmp(async (dir) => {
    const out = join(dir, "run");
    const port = String(freePort());
    const spawn = (rank: number) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "cli.ts",
          "run",
          "full_finetune_distributed",
          "--config",
          "tiny/full_distributed",
          `output_dir=${out}`,
          "epochs=50",
          "save_every_n_steps=1",
        ],
        cwd: ROOT,
        env: {
          RANK: String(rank),
          LOCAL_RANK: String(rank),
          WORLD_SIZE: "2",
          LOCAL_WORLD_SIZE: "2",
          MASTER_ADDR: "127.0.0.1",
          MASTER_PORT: port,
          ...env,
        },
        stdout: "null",
        stderr: rank === 0 ? "piped" : "null",
      }).spawn();
    const r0 = spawn(0);
    const r1 = spawn(1);
    const r1Done = r1.status;
    // Wait (on rank 0's own output, not a clock) for its first saved checkpoint.
    let stderr0 = "";
    const it = lines(r0.stderr);
    // (next() by hand: leaving a for-await loop would close the stream)
    for (let r = await it.next(); !r.done; r = await it.next()) {
      stderr0 += r.value + "\n";
      if (r.value.startsWith("saved ")) break;
    }
    assert.match(stderr0, /saved .*step_1/, `rank 0 saved a checkpoint:\n${stderr0}`);
    r1.kill(signal);
    const killedAt = performance.now();
    const rest = (async () => {
      for (let r = await it.next(); !r.done; r = await it.next()) stderr0 += r.value + "\n";
      return await r0.status;
    })();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<null>((res) => timer = setTimeout(() => res(null), 30_000));
    const status = await Promise.race([rest, deadline]);
    clearTimeout(timer);
    const seconds = (performance.now() - killedAt) / 1000;
    if (signal === "SIGSTOP") r1.kill("SIGKILL");
    await r1Done;
    if (status === null) {
      r0.kill("SIGKILL");
      await rest;
      assert.fail(`rank 0 still running 30 s after rank 1 got ${signal}:\n${stderr0}`);
    }
    const last = stderr0.trim().split("\n").pop()!;
    console.log(
      `${signal} to rank 1: rank 0 exited with code ${status.code} ${
        seconds.toFixed(2)
      } s later: ${last}`,
    );
    assert.notEqual(status.code, 0, "rank 0 fails");
    assert.match(last, /rank 1\b/, "rank 0's error names rank 1");
    assert.doesNotMatch(stderr0, /^\s+at /m, "a one-line error, no stack trace");

    // Every file is complete: no temporary names; weights and the recipe state load.
    const names: string[] = [];
    for (const e of Deno.readDirSync(out)) {
      if (!e.isDirectory) continue;
      for (const f of Deno.readDirSync(join(out, e.name))) names.push(join(e.name, f.name));
    }
    assert.deepEqual(names.filter((n) => n.includes(".tmp")), [], "no temporary files left");
    const steps = names.filter((n) => /^step_\d+\/model\.safetensors$/.test(n));
    assert.ok(steps.length >= 1, `a step checkpoint is on disk: ${names.join(", ")}`);
    for (const s of steps) {
      const sd = readSafetensors(join(out, s));
      assert.equal(sd.get("model.embed_tokens.weight")!.shape.join(","), "320,64", s);
      JSON.parse(Deno.readTextFileSync(join(out, s.replace("model.safetensors", "config.json"))));
    }
    const state = loadRecipeState(join(out, "recipe_state"));
    assert.ok(state.step >= 1, "the recipe state is a complete, consistent save");
    console.log(
      `on disk after the kill: ${steps.length} step checkpoints, recipe state at step ${state.step}`,
    );
  });
}

Deno.test("a SIGKILLed rank 1 makes rank 0 exit non-zero within 30 s naming it; only complete checkpoints on disk", async () => {
  await loseRank1("SIGKILL");
});

Deno.test("a hung (SIGSTOPped) rank 1 makes rank 0 exit non-zero after TUNE_DIST_TIMEOUT naming it", async () => {
  // 10 s: long enough that no ordinary wait times out (the wait for rank 0 writing a
  // checkpoint has TUNE_DIST_INIT_TIMEOUT as its deadline).
  await loseRank1("SIGSTOP", { TUNE_DIST_TIMEOUT: "10", TUNE_DIST_INIT_TIMEOUT: "10" });
});

const GPUS = gpuCount();
const HAS_NCCL = GPUS > 0 && await ncclPresent();

Deno.test(
  "the distributed recipes on device=cuda over NCCL match the single-device recipes on cuda (needs NVIDIA GPUs)",
  {
    ignore: !HAS_NCCL,
  },
  async () => {
    const W = Math.min(GPUS, 2);
    await withTmp(async (dir) => {
      for (const kind of ["full", "lora"]) {
        for (const dtype of ["fp32", "bf16"]) {
          const one = join(dir, `${kind}_${dtype}_one`), dist = join(dir, `${kind}_${dtype}_dist`);
          const common = ["device=cuda", `dtype=${dtype}`, ...SHORT];
          await runOk(
            "run",
            `${kind}_finetune_single_device`,
            "--config",
            `tiny/${kind}_single_device`,
            `output_dir=${one}`,
            ...common,
          );
          await runOk(
            "run",
            "--nproc_per_node",
            String(W),
            `${kind}_finetune_distributed`,
            "--config",
            `tiny/${kind}_distributed`,
            `output_dir=${dist}`,
            `batch_size=${4 / W}`,
            ...common,
          );
          const label = `${kind} cuda ${dtype}, ${W} rank(s)`;
          assertSameLosses(label, readMetrics(dist), readMetrics(one), 1e-5);
        }
        // The bf16 recipe (bf16 activations, bf16 frozen base under LoRA) follows the fp32
        // one: relative 1e-2 per step (the CPU kernel emulator gives 6.9e-5 for full).
        assertSameLosses(
          `${kind} cuda bf16 vs fp32`,
          readMetrics(join(dir, `${kind}_bf16_one`)),
          readMetrics(join(dir, `${kind}_fp32_one`)),
          1e-2,
        );
      }
    });
  },
);
