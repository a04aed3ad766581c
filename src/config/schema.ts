/**
 * Typed parameter declarations for recipes and `_component_` builders.
 *
 * A recipe declares its top-level keys in one `ParamSchema`; a key whose value is a
 * section with `_component_` (model, tokenizer, checkpointer, dataset, optimizer,
 * lr_scheduler, loss, ...) is declared `{ type: "component", kind }` and its other keys
 * are checked against the chosen component's own schema. Keys use torchtune's
 * snake_case names so torchtune configs and overrides carry over.
 */

import type { Bound } from "./value_bounds.ts";

/** The kinds of builders a config section can name. */
export type ComponentKind =
  | "model"
  | "tokenizer"
  | "checkpointer"
  | "dataset"
  | "preference_dataset"
  | "optimizer"
  | "lr_scheduler"
  | "loss"
  | "preference_loss"
  | "kd_loss"
  | "grpo_loss"
  | "reward"
  | "rl_dataset"
  | "metric_logger"
  | "profiler";

/** One declared key. */
export type ParamSpec =
  | { type: "int"; default?: number | null; doc: string; required?: boolean; bound?: Bound }
  | { type: "float"; default?: number | null; doc: string; required?: boolean; bound?: Bound }
  | { type: "bool"; default?: boolean | null; doc: string; required?: boolean }
  | {
    type: "string";
    default?: string | null;
    doc: string;
    required?: boolean;
    choices?: readonly string[];
  }
  | { type: "string[]"; default?: string[] | null; doc: string; required?: boolean }
  | { type: "int[]"; default?: number[] | null; doc: string; required?: boolean }
  | { type: "float[]"; default?: number[] | null; doc: string; required?: boolean }
  /** A nested plain section (no `_component_`), validated against `params`. */
  | { type: "section"; params: ParamSchema; doc: string; required?: boolean }
  /** A section naming a builder with `_component_`. */
  | { type: "component"; kind: ComponentKind; doc: string; required?: boolean; default?: null }
  /** Free-form value, passed through unchecked (use sparingly, e.g. chat templates). */
  | { type: "any"; default?: unknown; doc: string; required?: boolean };

export type ParamSchema = Record<string, ParamSpec>;

/** A builder that a config section can name with `_component_`. */
export interface ComponentSpec<T = unknown> {
  /** Canonical name, torchtune's dotted path where one exists (e.g. `torchtune.models.llama2.llama2_7b`). */
  name: string;
  /** Other accepted names (e.g. `tune.models.llama2_7b`, short forms). */
  aliases?: readonly string[];
  kind: ComponentKind;
  doc: string;
  params: ParamSchema;
  /** Build from validated arguments (defaults applied, types parsed). */
  build(args: Record<string, unknown>): T;
}

/** A resolved component section: the builder's canonical name plus its validated arguments. */
export interface ComponentSection {
  /** Canonical name of the builder (an alias in the YAML is replaced by it). */
  _component_: string;
  [key: string]: unknown;
}

/** Value type of a declared key after resolution (defaults applied, strings parsed). */
export type ParamValue<P extends ParamSpec> = P extends { type: "int" | "float" } ? number
  : P extends { type: "bool" } ? boolean
  : P extends { type: "string" } ? string
  : P extends { type: "string[]" } ? string[]
  : P extends { type: "int[]" | "float[]" } ? number[]
  : P extends { type: "section"; params: infer S extends ParamSchema } ? ResolvedConfig<S>
  : P extends { type: "component" } ? ComponentSection
  : unknown;

/** Whether a resolved key may be null: declared keys that are neither required nor given a non-null default. */
type Nullable<P extends ParamSpec> = P extends { required: true } ? never
  : P extends { type: "any" | "section" } ? never
  : P extends { default: infer D } ? (null extends D ? null : never)
  : null;

/**
 * A config after resolution against a schema: every declared key is present, with its
 * default when neither the YAML nor the command line set it (null when it has none).
 */
export type ResolvedConfig<S extends ParamSchema = ParamSchema> = {
  [K in keyof S]: ParamValue<S[K]> | Nullable<S[K]>;
};
