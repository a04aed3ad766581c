/**
 * Stopping a run and resuming it, as a user does: Ctrl-C (SIGINT) mid-run finishes the step,
 * saves a resumable checkpoint and the loss curve, prints one line naming the checkpoint and
 * the resume command, and exits 130; resuming then gives the uninterrupted run's metrics
 * bitwise, with no step lost (on 1 process and on 2 ranks, where the terminal's SIGINT
 * reaches the launcher and every rank). Resuming with another global batch is refused in one
 * line unless allow_changed_batch=true.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readSafetensors } from "../src/checkpoint/safetensors.ts";
import { exists, readMetrics, ROOT, runOk, timeless, tune, withTmp } from "./_recipe_helpers.ts";

/**
 * Run `tune run <args>`; once stderr shows step `at`, send SIGINT to the pids `targets`
 * picks (and again `againMs` later when given).
 */
async function interruptAt(
  args: string[],
  at: number,
  targets: (launcher: number, stderr: string) => number[],
  againMs?: number,
): Promise<{ code: number; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli.ts", "run", ...args],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  let sent = false;
  const dec = new TextDecoder();
  for await (const chunk of child.stderr) {
    stderr += dec.decode(chunk, { stream: true });
    if (!sent && new RegExp(`\\] ${at}/\\d+ loss=`).test(stderr)) {
      sent = true;
      const pids = targets(child.pid, stderr);
      for (const pid of pids) Deno.kill(pid, "SIGINT");
      if (againMs !== undefined) {
        setTimeout(() => {
          for (const pid of pids) {
            try {
              Deno.kill(pid, "SIGINT");
            } catch { /* already gone */ }
          }
        }, againMs);
      }
    }
  }
  const { code } = await child.status;
  assert.ok(sent, `the run never reached step ${at}:\n${stderr}`);
  return { code, stderr };
}

/** The interrupt line (exactly one) and its parts; no stack trace anywhere. */
function interruptLine(stderr: string): { step: number; dir: string; command: string } {
  assert.doesNotMatch(stderr, /^\s+at /m, "no stack trace");
  const lines = stderr.split("\n").filter((l) => l.startsWith("tune: interrupted"));
  assert.equal(lines.length, 1, stderr);
  const m = lines[0].match(/^tune: interrupted after step (\d+); saved (\S+); resume with: (.*)$/);
  assert.ok(m, lines[0]);
  return { step: Number(m[1]), dir: m[2], command: m[3] };
}

Deno.test("Ctrl-C mid-run saves a checkpoint, exits 130 with one line; resuming loses no step (bitwise)", async () => {
  await withTmp(async (dir) => {
    const whole = join(dir, "whole"), cut = join(dir, "cut");
    const args = ["lora_finetune_single_device", "--config", "tiny/lora_single_device", "seed=0"];
    await runOk(...args, `output_dir=${whole}`);
    const r = await interruptAt([...args, `output_dir=${cut}`], 3, (pid) => [pid]);
    assert.equal(r.code, 130, r.stderr);
    const line = interruptLine(r.stderr);
    console.log(`interrupted: step ${line.step}, ${line.dir}; ${line.command}`);
    assert.ok(line.step >= 3 && line.step < 20, `stopped after step ${line.step}`);
    assert.ok(exists(join(line.dir, "adapter_model.safetensors")), "the checkpoint is complete");
    assert.ok(exists(join(cut, "loss_curve.svg")), "the loss curve is written");
    assert.equal(readMetrics(cut).length, line.step);
    assert.ok(
      line.command.endsWith(`run ${args.join(" ")} output_dir=${cut} resume_from_checkpoint=True`),
      line.command,
    );
    const resumed = await runOk(...args, `output_dir=${cut}`, "resume_from_checkpoint=True");
    assert.match(
      resumed.stderr,
      new RegExp(`^resuming from step ${line.step} \\(epoch \\d\\) of ${cut}/recipe_state$`, "m"),
    );
    assert.equal(
      readMetrics(cut).map(timeless).join("\n"),
      readMetrics(whole).map(timeless).join("\n"),
    );
    console.log("Ctrl-C + resume = the uninterrupted run, bitwise (20 steps)");
  });
});

Deno.test("a second Ctrl-C ends the run at once (exit 130) and leaves no half-written checkpoint file", async () => {
  await withTmp(async (dir) => {
    // a wider model, so that steps and saves take long enough for a second Ctrl-C to land
    const wide = ["model.embed_dim=384", "model.num_heads=6", "model.intermediate_dim=1024"];
    const args = ["full_finetune_single_device", "--config", "tiny/full_single_device", ...wide];
    const r = await interruptAt(
      [...args, `output_dir=${dir}`, "save_every_n_steps=1"],
      1,
      (pid) => [pid],
      150,
    );
    assert.equal(r.code, 130, r.stderr);
    assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
    assert.doesNotMatch(
      r.stderr,
      /tune: interrupted/,
      "the second Ctrl-C did not wait for the save",
    );
    // every file under its final name is whole: checkpoints parse, metrics lines are JSON
    let checked = 0;
    for (const e of Deno.readDirSync(dir)) {
      if (!/^(step|epoch)_\d+$/.test(e.name)) continue;
      for (const f of Deno.readDirSync(join(dir, e.name))) {
        if (!f.name.endsWith(".safetensors")) continue;
        readSafetensors(join(dir, e.name, f.name));
        checked++;
      }
    }
    console.log(`second Ctrl-C: exit 130 at once; ${checked} checkpoint files on disk, all whole`);
    readMetrics(dir);
  });
});

Deno.test("Ctrl-C to a 2-rank job: all ranks stop after the same step, rank 0 reports, resume is bitwise", async () => {
  await withTmp(async (dir) => {
    const whole = join(dir, "whole"), cut = join(dir, "cut");
    const args = [
      "--nproc_per_node",
      "2",
      "lora_finetune_distributed",
      "--config",
      "tiny/lora_distributed",
      "seed=0",
    ];
    await runOk(...args, `output_dir=${whole}`);
    // a terminal's Ctrl-C reaches the launcher and both ranks (one process group)
    const ranks = (launcher: number, stderr: string) => [
      launcher,
      ...[...stderr.matchAll(/rank \d\/2 \(pid (\d+)\)/g)].map((m) => Number(m[1])),
    ];
    const r = await interruptAt([...args, `output_dir=${cut}`], 3, ranks);
    assert.equal(r.code, 130, r.stderr);
    const line = interruptLine(r.stderr);
    assert.ok(line.command.includes("run --nproc_per_node 2 lora_finetune_distributed"));
    assert.equal(readMetrics(cut).length, line.step);
    await runOk(...args, `output_dir=${cut}`, "resume_from_checkpoint=True");
    assert.equal(
      readMetrics(cut).map(timeless).join("\n"),
      readMetrics(whole).map(timeless).join("\n"),
    );
    console.log(`2 ranks: interrupted after step ${line.step}; resumed = uninterrupted, bitwise`);
  });
});

Deno.test("resuming with another global batch is refused in one line, or continues with allow_changed_batch=true", async () => {
  await withTmp(async (dir) => {
    const args = [
      "full_finetune_single_device",
      "--config",
      "tiny/full_single_device",
      `output_dir=${dir}`,
      "stop_after_steps=2",
    ];
    await runOk(...args);
    const refused = await tune("run", ...args, "resume_from_checkpoint=True", "batch_size=2");
    assert.equal(refused.code, 1);
    const lines = refused.stderr.trim().split("\n").filter((l) => l.startsWith("tune: cannot"));
    assert.equal(lines.length, 1, refused.stderr);
    assert.match(lines[0], /batch_size=4 on 1 .* batch_size=2 on 1 .*allow_changed_batch=true/);
    assert.doesNotMatch(refused.stderr, /^\s+at /m);
    const ok = await runOk(
      ...args.slice(0, -1),
      "resume_from_checkpoint=True",
      "batch_size=2",
      "allow_changed_batch=true",
      "max_steps_per_epoch=5",
    );
    assert.match(
      ok.stderr,
      /^warning: the saved run trained with batch_size=4 .*continuing at sample 8 /m,
    );
    assert.equal(readMetrics(dir)[2].step, 3);
  });
});
