/**
 * A named layout table for one flat parameter buffer (llm.c style): every tensor is a
 * (name, shape, offset) slice of one buffer, and gradients and optimizer moments use the
 * same table. Tensors are grouped (e.g. "tok_embeddings", "layers.0", ..., "head"), each
 * group contiguous, so a sharded (FSDP/ZeRO-3) optimizer can own whole groups or slices.
 */
import { TuneError } from "../errors.ts";
import { numel } from "./state_dict.ts";

/** Offsets are rounded up to this many elements (256 bytes in fp32) for aligned GEMMs. */
export const PARAM_ALIGN = 64;

/** One tensor of a layout. */
export interface ParamEntry {
  name: string;
  shape: number[];
  /** First element in the flat buffer. */
  offset: number;
  /** Number of elements (product of shape). */
  length: number;
  /** Name of the group the tensor belongs to. */
  group: string;
}

/** A contiguous run of tensors (one embedding, one decoder layer, the head). */
export interface ParamGroup {
  name: string;
  offset: number;
  /** Elements from the group's first offset to the end of its last tensor (padding included). */
  length: number;
  entries: ParamEntry[];
}

/** Declaration of a group before layout: its tensors in order. */
export interface GroupDecl {
  name: string;
  tensors: { name: string; shape: number[] }[];
}

/** An immutable layout table: tensors by name and contiguous groups, `total` elements. */
export class ParamLayout {
  readonly entries: readonly ParamEntry[];
  readonly groups: readonly ParamGroup[];
  /** Elements of the whole flat buffer (a multiple of PARAM_ALIGN, at least PARAM_ALIGN). */
  readonly total: number;
  readonly #byName = new Map<string, ParamEntry>();

  /** Lay out `groups` in order, each tensor aligned to PARAM_ALIGN elements. */
  constructor(groups: readonly GroupDecl[]) {
    const entries: ParamEntry[] = [];
    const laid: ParamGroup[] = [];
    let offset = 0;
    for (const g of groups) {
      const start = offset;
      const ge: ParamEntry[] = [];
      for (const t of g.tensors) {
        if (this.#byName.has(t.name)) throw new Error(`layout: tensor ${t.name} declared twice`);
        const e: ParamEntry = {
          name: t.name,
          shape: [...t.shape],
          offset,
          length: numel(t.shape),
          group: g.name,
        };
        offset = alignUp(offset + e.length);
        entries.push(e);
        ge.push(e);
        this.#byName.set(e.name, e);
      }
      laid.push({ name: g.name, offset: start, length: offset - start, entries: ge });
    }
    this.entries = entries;
    this.groups = laid;
    this.total = Math.max(offset, PARAM_ALIGN);
  }

  /** Whether the layout has a tensor called `name`. */
  has(name: string): boolean {
    return this.#byName.has(name);
  }

  /** The entry of `name`; a missing name is a bug in the caller. */
  get(name: string): ParamEntry {
    const e = this.#byName.get(name);
    if (!e) throw new Error(`layout has no tensor ${name}`);
    return e;
  }

  /** Number of real (unpadded) parameters. */
  numParams(): number {
    let n = 0;
    for (const e of this.entries) n += e.length;
    return n;
  }
}

function alignUp(n: number): number {
  return Math.ceil(n / PARAM_ALIGN) * PARAM_ALIGN;
}

/** Throw the user-facing shape mismatch error for tensor `name`. */
export function checkShape(name: string, expected: readonly number[], found: readonly number[]) {
  if (expected.length !== found.length || expected.some((d, i) => d !== found[i])) {
    throw new TuneError(
      `checkpoint tensor ${name} has shape [${found.join(", ")}] but the model expects ` +
        `[${expected.join(", ")}]; check that the model builder matches the checkpoint`,
    );
  }
}
