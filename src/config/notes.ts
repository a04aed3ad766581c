/**
 * Notes for keys a recipe accepts only so torchtune configs load unchanged (their doc says
 * "accepted for torchtune configs; ignored ..."), printed when a config sets one to
 * something other than its default, so nobody thinks `compile: true` did anything.
 */
import type { ParamSchema } from "./schema.ts";

const IGNORED = /^accepted for torchtune configs; ignored/;

/** One line per ignored key set away from its default, e.g. "compile=true is ignored (...)". */
export function ignoredKeyNotes(params: ParamSchema, config: Record<string, unknown>): string[] {
  const notes: string[] = [];
  for (const [key, spec] of Object.entries(params)) {
    if (!IGNORED.test(spec.doc)) continue;
    const value = config[key];
    const def = "default" in spec ? spec.default ?? null : null;
    if (value === null || value === undefined) continue;
    if (JSON.stringify(value) === JSON.stringify(def)) continue;
    const why = spec.doc.replace(IGNORED, "").replace(/^\s*\(?|\)?\s*$/g, "");
    notes.push(`${key}=${JSON.stringify(value)} is ignored${why ? ` (${why})` : ""}`);
  }
  return notes;
}
