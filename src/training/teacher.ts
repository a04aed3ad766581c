/**
 * The teacher of the knowledge-distillation recipes: a frozen full model, inference only,
 * built for the student's batch shape and checked against the student's vocabulary.
 */
import type { Backend } from "../backend/ops.ts";
import type { Checkpointer } from "../checkpoint/checkpointer.ts";
import { instantiate } from "../config/instantiate.ts";
import type { ComponentSection } from "../config/schema.ts";
import { TuneError } from "../errors.ts";
import { createLlama, type LlamaModel } from "../models/llama/mod.ts";
import type { DistillLossResult } from "../models/llama/model.ts";
import type { ModelSpec } from "../models/model_spec.ts";
import type { KdLoss } from "../optim/components.ts";
import { mixSeed } from "../params/random.ts";
import { modelDtypes } from "./steps.ts";
import { withCheckpointFields } from "../models/llama/config.ts";

/** The recipe keys the teacher comes from. */
export interface TeacherKeys {
  teacher_model: ComponentSection;
  teacher_checkpointer: ComponentSection | null;
  teacher_model_init: string;
  kd_ratio: number;
}

/** kd_ratio must weigh the two losses: a number in [0, 1]. */
export function checkKdRatio(r: number): void {
  if (!(r >= 0 && r <= 1)) throw new TuneError(`kd_ratio must be between 0 and 1, got ${r}`);
}

/**
 * Build and load the teacher: weights from `teacher_checkpointer`, or seeded random ones
 * (`teacher_model_init: random`, for tiny test configs). Its activations take `activationDtype`.
 */
export function setupTeacher(
  backend: Backend,
  keys: TeacherKeys,
  student: ModelSpec,
  shape: { batch: number; seqLen: number },
  seed: number,
  activationDtype: "f32" | "bf16",
): LlamaModel {
  const tspec = instantiate<ModelSpec>(keys.teacher_model);
  if (tspec.lora) {
    throw new TuneError(
      `teacher_model ${keys.teacher_model._component_} has LoRA adapters; use a full model builder for the teacher`,
    );
  }
  if (tspec.config.vocabSize !== student.config.vocabSize) {
    throw new TuneError(
      `teacher vocabulary ${tspec.config.vocabSize} differs from the student's ${student.config.vocabSize}; distillation needs one tokenizer for both`,
    );
  }
  let weights = null;
  if (keys.teacher_model_init === "checkpoint") {
    if (!keys.teacher_checkpointer) {
      throw new TuneError(
        "teacher_checkpointer is not set; point it at the teacher's weights (or set teacher_model_init=random for a test)",
      );
    }
    const loaded = instantiate<Checkpointer>(keys.teacher_checkpointer).load({
      resumeFromCheckpoint: false,
    });
    tspec.config = withCheckpointFields(tspec.config, loaded.config);
    weights = loaded.stateDict;
  }
  const teacher = createLlama(backend, tspec, {
    batch: shape.batch,
    seqLen: shape.seqLen,
    training: false,
    logitChunks: 1,
    activationDtype,
  });
  if (weights) teacher.loadStateDict(weights);
  else teacher.initRandom(mixSeed(seed, 0x7eac));
  return teacher;
}

/**
 * A distillation micro-batch's summed loss, (1 - r) class + r KD, adding both sums to
 * `sums` (logged as class_loss and kd_loss, means over the step's tokens).
 */
export function distillMicroLoss(
  out: DistillLossResult,
  kdRatio: number,
  sums: Record<string, number>,
): number {
  sums.class_loss = (sums.class_loss ?? 0) + out.lossSum;
  sums.kd_loss = (sums.kd_loss ?? 0) + out.kdLossSum;
  return (1 - kdRatio) * out.lossSum + kdRatio * out.kdLossSum;
}

/** The distillation keys a recipe resolves (its whole config has more). */
export interface DistillationKeys extends TeacherKeys {
  kd_loss: ComponentSection | null;
  dtype: string;
  device: string;
}

/**
 * The teacher, once the student's loss and batch shape are known: kd_ratio and the KD loss's
 * ignore_index checked, the teacher built and loaded for `shape`.
 */
export function setupDistillation(
  backend: Backend,
  keys: DistillationKeys,
  student: ModelSpec,
  shape: { batch: number; seqLen: number },
  seed: number,
  studentIgnoreIndex: number,
): LlamaModel {
  checkKdRatio(keys.kd_ratio);
  const kdLoss = keys.kd_loss
    ? instantiate<KdLoss>(keys.kd_loss)
    : { kind: "forward_kl" as const, ignoreIndex: -100 };
  if (kdLoss.ignoreIndex !== studentIgnoreIndex) {
    throw new TuneError(
      `kd_loss.ignore_index=${kdLoss.ignoreIndex} differs from loss.ignore_index=${studentIgnoreIndex}; set them equal`,
    );
  }
  const act = modelDtypes(keys.dtype, keys.device).activationDtype;
  return setupTeacher(backend, keys, student, shape, seed, act);
}
