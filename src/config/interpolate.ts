/**
 * OmegaConf-style interpolation, as torchtune configs use it: a string value
 * `${output_dir}/logs` takes another key's value. A value that is exactly `${key}` takes the
 * referenced value as is (a number stays a number).
 */
import { TuneError } from "../errors.ts";
import { CliText } from "./overrides.ts";
import { type ConfigTree, isMapping } from "./yaml.ts";

const REF = /\$\{([A-Za-z0-9_.]+)\}/g;
const WHOLE_REF = /^\$\{([A-Za-z0-9_.]+)\}$/;

/**
 * Replace every `${key}` in the tree (in place). A key missing from the tree is looked up
 * with `fallback` (the recipe's defaults); still missing, or a cycle, is a TuneError.
 */
export function interpolate(tree: ConfigTree, fallback: (key: string) => unknown): void {
  const done = new Map<string, unknown>();

  const lookup = (key: string, from: string, stack: string[]): unknown => {
    if (stack.includes(key)) {
      throw new TuneError(`interpolation cycle: ${[...stack, key].join(" -> ")}`);
    }
    if (done.has(key)) return done.get(key);
    let value = getPath(tree, key);
    if (value === undefined) value = fallback(key);
    if (value === undefined) {
      throw new TuneError(`'${from}' refers to \${${key}}, which is not set in the config`);
    }
    const out = resolveValue(value, key, [...stack, key]);
    done.set(key, out);
    return out;
  };

  const resolveValue = (value: unknown, at: string, stack: string[]): unknown => {
    const text = value instanceof CliText ? value.text : typeof value === "string" ? value : null;
    if (text === null || !text.includes("${")) return value;
    const whole = WHOLE_REF.exec(text);
    if (whole) return lookup(whole[1], at, stack);
    const replaced = text.replace(REF, (_, key: string) => {
      const v = lookup(key, at, stack);
      return v instanceof CliText ? v.text : String(v);
    });
    return value instanceof CliText ? new CliText(replaced) : replaced;
  };

  const walk = (node: Record<string, unknown> | unknown[], prefix: string): void => {
    for (const k of Object.keys(node)) {
      const key = prefix ? `${prefix}.${k}` : k;
      const v = (node as Record<string, unknown>)[k];
      if (isMapping(v) || Array.isArray(v)) walk(v, key);
      else (node as Record<string, unknown>)[k] = resolveValue(v, key, []);
    }
  };
  walk(tree, "");
}

/** The value at a dotted key, or undefined. */
export function getPath(tree: ConfigTree, key: string): unknown {
  let node: unknown = tree;
  for (const part of key.split(".")) {
    if (isMapping(node) && Object.hasOwn(node, part)) node = node[part];
    else if (Array.isArray(node) && /^\d+$/.test(part)) node = node[Number(part)];
    else return undefined;
  }
  return node;
}
