/** Reading and writing YAML configs (npm:yaml, YAML 1.2 core schema). */
import { parse, stringify } from "yaml";
import { TuneError } from "../errors.ts";

/** A config tree: a YAML mapping, parsed. */
export type ConfigTree = Record<string, unknown>;

/** Whether a value is a plain mapping (not null, not a list, not a class instance). */
export function isMapping(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * Parse a config file's text. A malformed file throws a TuneError naming the file and the
 * line; an empty file is an empty config; a top level that is not a mapping is an error.
 */
export function parseConfigYaml(text: string, file: string): ConfigTree {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (e) {
    const err = e as Error & { linePos?: { line: number; col: number }[] };
    const line = err.linePos?.[0]?.line;
    const reason = String(err.message).split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
    throw new TuneError(
      `malformed YAML in ${file}${line === undefined ? "" : ` at line ${line}`}: ${reason}`,
    );
  }
  if (doc === null || doc === undefined) return {};
  if (!isMapping(doc)) {
    throw new TuneError(`malformed config ${file}: the top level must be a mapping of keys`);
  }
  return doc;
}

/** Parse one value written in YAML flow syntax (`[q_proj,v_proj]`, `{a: 1}`, `true`, `2e-5`). */
export function parseYamlValue(text: string, what: string): unknown {
  try {
    return parse(text);
  } catch (e) {
    const reason = String((e as Error).message).split("\n")[0];
    throw new TuneError(`malformed value for ${what}: '${text}' (${reason})`);
  }
}

/** Write a config tree as YAML (block style, keys in insertion order). */
export function stringifyConfig(tree: ConfigTree): string {
  return stringify(tree, { lineWidth: 0 });
}
