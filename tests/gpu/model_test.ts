/**
 * GPU checks, the tiny Llama and aidreams260K end to end: one training step (full, LoRA, DoRA,
 * DPO, distillation) on both backends, 10 AdamW steps against the PyTorch fixture, a Gemma
 * checkpoint's logits, and aidreams260K's mean cross-entropy and greedy generation against
 * tests/data/models/aidreams260K/reference.jsonl. Runs under `deno test` when a GPU answers and
 * from scripts/gpu_check.ts (a GPU session, or the kernel emulator with --small).
 */
import type { Backend } from "../../src/backend/ops.ts";
import {
  BF16,
  check,
  cmpArrays,
  cpu,
  F32_PROD,
  gpu,
  gpuTest,
  type Outcome,
  results,
} from "./_harness.ts";

// ---- model checks ------------------------------------------------------------------------

async function modelSteps(): Promise<void> {
  const { createLlama } = await import("../../src/models/llama/model.ts");
  const { readLlama2c } = await import("../../src/checkpoint/llama2c.ts");
  // The copy in tests/data (from ../shared/models/aidreams260K, see tests/data/README.md).
  const shared = new URL("../data/models/aidreams260K/", import.meta.url).pathname;
  const ref = Deno.readTextFileSync(`${shared}reference.jsonl`).trim().split("\n").map((l) =>
    JSON.parse(l)
  );

  check("aidreams260K mean cross-entropy (fp32 on GPU)", () => {
    const m = readLlama2c(`${shared}model.bin`);
    const c = ref.find((r) => r.case === "loss");
    const rows = c.tokens as number[][];
    const B = rows.length, T = rows[0].length - 1;
    const inputs = new Int32Array(B * T), labels = new Int32Array(B * T);
    rows.forEach((r, b) => {
      inputs.set(r.slice(0, T), b * T);
      labels.set(r.slice(1), b * T);
    });
    const out: Outcome[] = [];
    for (const [name, be] of [["gpu", gpu], ["cpu", cpu]] as [string, Backend][]) {
      const model = createLlama(be, { name: "aidreams260K", config: m.config, lora: null }, {
        batch: B,
        seqLen: T,
      });
      model.loadStateDict(m.stateDict);
      const r = model.loss(inputs, labels);
      out.push(cmpArrays(`${name} mean CE`, [r.lossSum / r.tokens], [c.mean_cross_entropy], {
        atol: 1e-4,
        rtol: 0,
      }));
      model.free();
    }
    return out;
  });

  check("aidreams260K greedy generation vs reference", () => {
    const m = readLlama2c(`${shared}model.bin`);
    const c = ref.find((r) => r.case === "greedy");
    const want = c.ids as number[];
    const model = createLlama(gpu, { name: "aidreams260K", config: m.config, lora: null }, {
      batch: 1,
      seqLen: 8,
    });
    model.loadStateDict(m.stateDict);
    const prompt = Int32Array.from(c.prompt_ids as number[]);
    model.setupCaches(1, prompt.length + c.max_new_tokens);
    const ids = [...prompt];
    let logits = model.prefill(prompt);
    for (let i = 0; i < c.max_new_tokens; i++) {
      const l = gpu.download(logits) as Float32Array;
      let best = 0;
      for (let j = 1; j < l.length; j++) if (l[j] > l[best]) best = j;
      ids.push(best);
      if (i + 1 < c.max_new_tokens) logits = model.decodeStep(Int32Array.of(best));
    }
    model.free();
    let same = 0;
    while (same < want.length && ids[same] === want[same]) same++;
    return [{
      label: "ids",
      ok: same === want.length && ids.length === want.length,
      detail: `${same}/${want.length} tokens match the reference`,
    }];
  });

  // fp32 on the GPU against the CPU at fp32 tolerances, then bf16 activations (and a bf16
  // frozen base under LoRA), as the recipes run with dtype=bf16, at STYLE.md's bf16 tolerance.
  for (
    const [kind, act] of [
      ["full", "f32"],
      ["lora", "f32"],
      ["full", "bf16"],
      [
        "lora",
        "bf16",
      ],
      ["dora", "f32"],
      ["dora", "bf16"],
    ] as const
  ) {
    const tag = act === "bf16" ? " [bf16 activations]" : "";
    check(`tiny Llama one step (${kind}): loss and every gradient, CUDA vs CPU${tag}`, () => {
      const fx = fixtureModule.loadFixture(`model_train_${kind}`);
      const N = fx.meta("B") * fx.meta("T");
      const tokens: Int32Array = fx.i32("tokens").subarray(0, N);
      const targets: Int32Array = fx.i32("targets").subarray(0, N);
      const lora = kind === "full"
        ? null
        : { ...helperModule.fixtureLora(fx), ...(kind === "dora" ? { useDora: true } : {}) };
      const sd = helperModule.prefixedStateDict(fx, "w.");
      // DoRA starts from the trained adapters (B != 0, magnitudes != ||W||): every term counts
      const from = kind === "dora" ? "final." : "init.";
      if (lora) { for (const [n, t] of helperModule.prefixedStateDict(fx, from)) sd.set(n, t); }
      const run = (be: Backend, dt: "f32" | "bf16") => {
        const model = createLlama(be, {
          name: `tiny_${kind}`,
          config: helperModule.fixtureConfig(fx),
          lora,
        }, {
          batch: fx.meta("B"),
          seqLen: fx.meta("T"),
          seed: lora?.seed ?? 0,
          activationDtype: dt,
          frozenDtype: lora ? dt : "f32",
        });
        model.loadStateDict(sd);
        model.zeroGrad();
        const r = model.lossAndBackward(tokens, targets, 1 / N);
        const grads = be.download(model.trainable.grads!) as Float32Array;
        model.free();
        return { loss: r.lossSum / r.tokens, grads };
      };
      const g = run(gpu, act), c = run(cpu, "f32");
      if (act === "bf16") {
        // The elementwise bf16 tolerance is loose next to gradients this small, so the whole
        // gradient must also agree in direction and size: relative L2 error under 5%.
        let dd = 0, cc = 0;
        for (let i = 0; i < c.grads.length; i++) {
          dd += (g.grads[i] - c.grads[i]) ** 2;
          cc += c.grads[i] ** 2;
        }
        const rel = Math.sqrt(dd / cc);
        return [
          cmpArrays("loss", [g.loss], [c.loss], BF16),
          cmpArrays(`${g.grads.length} gradients`, g.grads, c.grads, BF16),
          {
            label: "gradient relative L2",
            ok: rel <= 0.05,
            detail: `${rel.toExponential(2)} (limit 5.00e-2)`,
          },
        ];
      }
      return [
        cmpArrays("loss", [g.loss], [c.loss], { atol: 1e-5, rtol: 1e-4 }),
        cmpArrays(`${g.grads.length} gradients`, g.grads, c.grads, F32_PROD),
      ];
    });
  }

  // A DPO micro-batch as lora_dpo_single_device runs it: the reference (adapters off) and
  // the policy's weighted backward, each backend weighing with its own sequence losses.
  const { preferenceLoss } = await import("../../src/rlhf/preference_loss.ts");
  const { sequenceWeights, countedPerSequence } = await import("../../src/rlhf/preference_step.ts");
  for (const act of ["f32", "bf16"] as const) {
    const tag = act === "bf16" ? " [bf16 activations]" : "";
    check(
      `tiny Llama DPO step (lora): sequence log-probs and adapter gradients, CUDA vs CPU${tag}`,
      () => {
        const fx = fixtureModule.loadFixture("model_train_dpo");
        const P = fx.meta("P"), N = 2 * P * fx.meta("T");
        const tokens: Int32Array = fx.i32("tokens").subarray(0, N);
        const targets: Int32Array = fx.i32("targets").subarray(0, N);
        const lora = helperModule.fixtureLora(fx);
        const sd = helperModule.prefixedStateDict(fx, "w.");
        for (const [n, t] of helperModule.prefixedStateDict(fx, "init.")) sd.set(n, t);
        const hp = fx.meta("hp");
        const neg = (a: Float64Array) => a.map((x) => -x);
        const run = (be: Backend, dt: "f32" | "bf16") => {
          const model = createLlama(be, {
            name: "tiny_dpo",
            config: helperModule.fixtureConfig(fx),
            lora,
          }, {
            batch: 2 * P,
            seqLen: fx.meta("T"),
            seed: lora.seed,
            activationDtype: dt,
            frozenDtype: dt,
          });
          model.loadStateDict(sd);
          model.zeroGrad();
          const ref = model.withAdaptersDisabled(() => model.sequenceLosses(tokens, targets));
          const r = model.weightedLossAndBackward(tokens, targets, (seqLoss) =>
            sequenceWeights(
              preferenceLoss({ kind: "dpo", beta: hp.beta, labelSmoothing: hp.label_smoothing }, {
                policyChosen: neg(seqLoss.subarray(0, P)),
                policyRejected: neg(seqLoss.subarray(P)),
                referenceChosen: neg(ref.subarray(0, P)),
                referenceRejected: neg(ref.subarray(P)),
              }),
              countedPerSequence(targets, 2 * P),
              false,
              P,
            ));
          const grads = be.download(model.trainable.grads!) as Float32Array;
          model.free();
          return { ref: Array.from(ref), pol: Array.from(r.seqLoss), grads };
        };
        const g = run(gpu, act), c = run(cpu, "f32");
        const tol = act === "bf16" ? BF16 : F32_PROD;
        return [
          cmpArrays("reference sequence losses", g.ref, c.ref, tol),
          cmpArrays("policy sequence losses", g.pol, c.pol, tol),
          cmpArrays(`${g.grads.length} adapter gradients`, g.grads, c.grads, tol),
        ];
      },
    );
  }

  // A distillation micro-batch as knowledge_distillation_single_device runs it: the teacher's
  // forward, then the LoRA student's class + KD loss and backward.
  for (const act of ["f32", "bf16"] as const) {
    const tag = act === "bf16" ? " [bf16 activations]" : "";
    check(
      `tiny Llama KD step (lora student, full teacher): losses and adapter gradients, CUDA vs CPU${tag}`,
      () => {
        const fx = fixtureModule.loadFixture("model_train_kd");
        const N = fx.meta("B") * fx.meta("T");
        const tokens: Int32Array = fx.i32("tokens").subarray(0, N);
        const targets: Int32Array = fx.i32("targets").subarray(0, N);
        const lora = helperModule.fixtureLora(fx);
        const sd = helperModule.prefixedStateDict(fx, "w.");
        for (const [n, t] of helperModule.prefixedStateDict(fx, "init.")) sd.set(n, t);
        const tfx = { ...fx, meta: (k: string) => fx.meta(k === "config" ? "teacher_config" : k) };
        const run = (be: Backend, dt: "f32" | "bf16") => {
          const dims = { batch: fx.meta("B"), seqLen: fx.meta("T"), activationDtype: dt };
          const student = createLlama(be, {
            name: "student",
            config: helperModule.fixtureConfig(fx),
            lora,
          }, { ...dims, seed: lora.seed, frozenDtype: dt });
          student.loadStateDict(sd);
          const teacher = createLlama(be, {
            name: "teacher",
            config: helperModule.fixtureConfig(tfx),
            lora: null,
          }, { ...dims, training: false });
          teacher.loadStateDict(helperModule.prefixedStateDict(fx, "teacher."));
          student.zeroGrad();
          const r = student.distillLossAndBackward(tokens, targets, 1 / N, {
            teacherLogits: teacher.forward(tokens),
            kdRatio: 0.5,
          });
          const grads = be.download(student.trainable.grads!) as Float32Array;
          student.free();
          teacher.free();
          return { ce: r.lossSum / r.tokens, kd: r.kdLossSum / r.tokens, grads };
        };
        const g = run(gpu, act), c = run(cpu, "f32");
        const tol = act === "bf16" ? BF16 : F32_PROD;
        return [
          cmpArrays("class loss", [g.ce], [c.ce], tol),
          cmpArrays("KD loss", [g.kd], [c.kd], tol),
          cmpArrays(`${g.grads.length} adapter gradients`, g.grads, c.grads, tol),
        ];
      },
    );
  }

  // Gemma 1 (GeGLU, embeddings x sqrt(dim), 1 + scale norms, head_dim != dim / heads, one
  // kv head, tied): the tiny GemmaForCausalLM of tests/reference/gemma_reference.py. fp32 on the
  // GPU against PyTorch's loss and gradients; bf16 activations (and a bf16 frozen base under
  // LoRA) against the CPU; KV-cache greedy decoding on the GPU against the CPU.
  const { loadHfCheckpoint } = await import("../../src/checkpoint/hf_checkpoint.ts");
  const { convertRopeLayout } = await import("../../src/checkpoint/rope_permute.ts");
  const { tuneToHf } = await import("../../src/checkpoint/key_mapping.ts");
  type LoraAttnModule = "q_proj" | "k_proj" | "v_proj" | "output_proj";
  const gemmaDir = new URL("../fixtures/checkpoint_hf_gemma", import.meta.url).pathname;
  const gemmaStep = (be: Backend, dt: "f32" | "bf16", lora: boolean) => {
    const hf = loadHfCheckpoint(gemmaDir);
    const fx = fixtureModule.loadFixture("checkpoint_hf_gemma_expected");
    const tokens: Int32Array = fx.i32("train_tokens"),
      targets: Int32Array = fx.i32("train_targets");
    const loraConfig = lora
      ? {
        attnModules: ["q_proj", "k_proj", "v_proj", "output_proj"] as LoraAttnModule[],
        applyToMlp: true,
        applyToOutput: false,
        rank: 4,
        alpha: 8,
        dropout: 0,
      }
      : null;
    const model = createLlama(be, { name: "tiny_gemma", config: hf.config, lora: loraConfig }, {
      batch: 2,
      seqLen: 6,
      seed: 3,
      activationDtype: dt,
      frozenDtype: lora ? dt : "f32",
    });
    model.loadStateDict(hf.stateDict);
    if (lora) {
      // non-zero B so every adapter gradient is non-trivial (the same values on both backends)
      const sd = model.adapterStateDict();
      for (const [n, t] of sd) {
        if (n.includes("lora_b")) t.data.forEach((_, i) => t.data[i] = Math.cos(i) * 0.05);
      }
      model.loadStateDict(new Map([...hf.stateDict, ...sd]));
    }
    model.zeroGrad();
    let count = 0;
    for (const t of targets) if (t !== -100) count++;
    const r = model.lossAndBackward(tokens, targets, 1 / count);
    const named = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const name of model.trainableNames()) {
      const e = model.trainable.layout.get(name);
      named.set(name, {
        shape: [...e.shape],
        data: (be.download(model.trainable.grad(name)!) as Float32Array).slice(),
      });
    }
    const grads = be.download(model.trainable.grads!) as Float32Array;
    model.free();
    return { loss: r.lossSum / r.tokens, grads, named, config: hf.config, fx };
  };
  check("tiny Gemma one step (full) vs PyTorch: loss and every gradient (fp32 on GPU)", () => {
    const g = gemmaStep(gpu, "f32", false);
    const half = convertRopeLayout(g.named, g.config, "half");
    const out: Outcome[] = [
      cmpArrays("loss", [g.loss], g.fx.f32("loss"), { atol: 1e-4, rtol: 1e-3 }),
    ];
    let worst = 0;
    let bad: Outcome | null = null;
    for (const [name, t] of half) {
      const o = cmpArrays(name, t.data, g.fx.f32(`grad.${tuneToHf(name)}`), {
        atol: 1e-4,
        rtol: 1e-3,
      });
      if (!o.ok && bad === null) bad = o;
      const ref = g.fx.f32(`grad.${tuneToHf(name)}`);
      for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(t.data[i] - ref[i]));
    }
    out.push(
      bad ?? {
        label: `${half.size} gradients`,
        ok: true,
        detail: `max|diff| ${worst.toExponential(2)} (atol 1e-4 rtol 1e-3)`,
      },
    );
    return out;
  });
  for (const lora of [false, true]) {
    const kind = lora ? "lora" : "full";
    check(
      `tiny Gemma one step (${kind}): loss and every gradient, CUDA vs CPU [bf16 activations]`,
      () => {
        const g = gemmaStep(gpu, "bf16", lora), c = gemmaStep(cpu, "f32", lora);
        let dd = 0, cc = 0;
        for (let i = 0; i < c.grads.length; i++) {
          dd += (g.grads[i] - c.grads[i]) ** 2;
          cc += c.grads[i] ** 2;
        }
        const rel = Math.sqrt(dd / cc);
        return [
          cmpArrays("loss", [g.loss], [c.loss], BF16),
          {
            label: `${c.grads.length} gradients, relative L2`,
            ok: rel <= 0.05,
            detail: `${rel.toExponential(2)} (limit 5.00e-2)`,
          },
        ];
      },
    );
  }
  check("tiny Gemma KV-cache greedy decoding, CUDA vs CPU (fp32)", () => {
    const hf = loadHfCheckpoint(gemmaDir);
    const prompt = Int32Array.of(12, 25, 6, 37);
    const steps = 8;
    const run = (be: Backend) => {
      const model = createLlama(be, { name: "tiny_gemma", config: hf.config, lora: null }, {
        batch: 1,
        seqLen: prompt.length,
        training: false,
      });
      model.loadStateDict(hf.stateDict);
      model.setupCaches(1, prompt.length + steps);
      const ids: number[] = [];
      const all: number[] = [];
      let logits = model.prefill(prompt);
      for (let i = 0; i < steps; i++) {
        const l = be.download(logits) as Float32Array;
        all.push(...l);
        let best = 0;
        for (let j = 1; j < l.length; j++) if (l[j] > l[best]) best = j;
        ids.push(best);
        if (i + 1 < steps) logits = model.decodeStep(Int32Array.of(best));
      }
      model.free();
      return { ids, all };
    };
    const g = run(gpu), c = run(cpu);
    return [
      cmpArrays("logits of every step", g.all, c.all, F32_PROD),
      {
        label: "greedy ids",
        ok: g.ids.join() === c.ids.join(),
        detail: `gpu ${g.ids.join(" ")} / cpu ${c.ids.join(" ")}`,
      },
    ];
  });

  check("tiny Llama 10-step AdamW training vs PyTorch fixture (fp32 on GPU)", () => {
    // The recipe of tests/model_train_test.ts, run on the GPU.
    const { loadFixtureSync, trainFixture } = tinyTraining;
    const fx = loadFixtureSync();
    const g = trainFixture(gpu, fx, createLlama);
    const ref = fx.f32("losses");
    const refNorms = fx.f32("grad_norms");
    return [
      cmpArrays("losses", g.losses, ref, { atol: 1e-4, rtol: 0 }),
      cmpArrays("grad norms", g.norms, refNorms, { atol: 0, rtol: 1e-3 }),
    ];
  });
}

/** The training loop of tests/model_train_test.ts (full fine-tune), backend-agnostic. */
const tinyTraining = {
  loadFixtureSync() {
    return fixtureModule.loadFixture("model_train_full");
  },
  trainFixture(
    be: Backend,
    // deno-lint-ignore no-explicit-any
    fx: any,
    // deno-lint-ignore no-explicit-any
    createLlama: any,
  ): { losses: number[]; norms: number[] } {
    const hp = fx.meta("hp");
    const steps = fx.meta("steps"), micro = fx.meta("micro");
    const N = fx.meta("B") * fx.meta("T");
    const tokens: Int32Array = fx.i32("tokens"), targets: Int32Array = fx.i32("targets");
    const model = createLlama(be, {
      name: "tiny",
      config: helperModule.fixtureConfig(fx),
      lora: null,
    }, {
      batch: fx.meta("B"),
      seqLen: fx.meta("T"),
    });
    model.loadStateDict(helperModule.prefixedStateDict(fx, "w."));
    const opt = new optimModule.AdamW(be, model.trainable, {
      lr: hp.lr,
      betas: hp.betas,
      eps: hp.eps,
      weightDecay: hp.weight_decay,
    });
    const sched = new schedModule.LrScheduler(
      { numWarmupSteps: hp.warmup, numCycles: 0.5 },
      hp.lr,
      steps,
    );
    const losses: number[] = [], norms: number[] = [];
    for (let s = 0; s < steps; s++) {
      const mb = (j: number) => (s * micro + j) * N;
      let ntok = 0;
      for (let j = 0; j < micro; j++) {
        for (const t of targets.subarray(mb(j), mb(j) + N)) if (t !== -100) ntok++;
      }
      model.zeroGrad();
      let sum = 0;
      for (let j = 0; j < micro; j++) {
        sum += model.lossAndBackward(
          tokens.subarray(mb(j), mb(j) + N),
          targets.subarray(mb(j), mb(j) + N),
          1 / ntok,
        ).lossSum;
      }
      norms.push(clipModule.clipGradNorm(be, model.trainable, hp.max_norm));
      opt.step(sched.lrAt(s));
      losses.push(sum / ntok);
    }
    model.free();
    return { losses, norms };
  },
};

// Modules of the training section, loaded only when it runs.
// deno-lint-ignore no-explicit-any
let fixtureModule: any, helperModule: any, optimModule: any, schedModule: any, clipModule: any;

/**
 * The model section: loads its modules (the fixtures and helpers of tests/, the optimizer),
 * then runs; a section that cannot start is one failed check.
 */
export async function modelChecks(): Promise<void> {
  try {
    fixtureModule = await import("../fixture_io.ts");
    helperModule = await import("../_model_helpers.ts");
    optimModule = await import("../../src/optim/adamw.ts");
    schedModule = await import("../../src/optim/lr_schedule.ts");
    clipModule = await import("../../src/optim/clip.ts");
    await modelSteps();
  } catch (e) {
    results.push({ name: "model section", ok: false });
    console.log(`FAIL  model section could not start: ${(e as Error).stack ?? e}`);
  }
}

gpuTest("the tiny Llama and aidreams260K end to end", modelChecks);
