/**
 * Command-line overrides: `key=value` sets a (dotted) key, `~key` deletes one.
 * Values from the command line stay text (`CliText`) until resolution parses them by the
 * key's declared type, so `lora_rank=4` becomes a number and `prompt=4` stays a string.
 */
import { TuneError } from "../errors.ts";
import { type ConfigTree, isMapping } from "./yaml.ts";

/** A value typed on the command line, not yet parsed. */
export class CliText {
  constructor(readonly text: string) {}
}

/** One override. `value` is CliText for `key=value` args, or a plain value set by code. */
export type Override =
  | { op: "set"; key: string; value: unknown }
  | { op: "delete"; key: string };

/** Parse `key=value` / `~key` arguments. Anything else is a TuneError naming the argument. */
export function parseOverrides(args: readonly string[]): Override[] {
  return args.map((arg) => {
    if (arg.startsWith("~")) {
      const key = arg.slice(1);
      checkKey(key, arg);
      return { op: "delete", key };
    }
    const eq = arg.indexOf("=");
    if (eq < 0) {
      throw new TuneError(
        `bad override '${arg}': write key=value to set a key or ~key to delete one`,
      );
    }
    const key = arg.slice(0, eq);
    checkKey(key, arg);
    return { op: "set", key, value: new CliText(arg.slice(eq + 1)) };
  });
}

function checkKey(key: string, arg: string): void {
  if (!/^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/.test(key)) {
    throw new TuneError(
      `bad override '${arg}': keys are dotted snake_case names like optimizer.lr`,
    );
  }
}

/** Rewrite a dotted key whose first part is a top-level alias (`lora_rank` -> `model.lora_rank`). */
export function unalias(key: string, aliases: Readonly<Record<string, string>>): string {
  const [head, ...rest] = key.split(".");
  const target = Object.hasOwn(aliases, head) ? aliases[head] : undefined;
  return target === undefined ? key : [target, ...rest].join(".");
}

/**
 * Move top-level alias keys of a YAML tree to the keys they stand for (in place), so a
 * config written with `lora_rank: 8` at the top means `model.lora_rank: 8`.
 */
export function applyKeyAliases(tree: ConfigTree, aliases: Readonly<Record<string, string>>): void {
  for (const alias of Object.keys(aliases)) {
    if (!Object.hasOwn(tree, alias)) continue;
    const value = tree[alias];
    delete tree[alias];
    setPath(tree, aliases[alias], value);
  }
}

/** Apply overrides in order (later wins) to a tree, in place. */
export function applyOverrides(
  tree: ConfigTree,
  overrides: readonly Override[],
  aliases: Readonly<Record<string, string>> = {},
): void {
  for (const o of overrides) {
    const key = unalias(o.key, aliases);
    if (o.op === "set") setPath(tree, key, o.value);
    else deletePath(tree, key);
  }
}

/** Set a dotted key, creating sections on the way; a list index may appear as a number. */
export function setPath(tree: ConfigTree, key: string, value: unknown): void {
  const parts = key.split(".");
  let node: unknown = tree;
  for (let i = 0; i < parts.length - 1; i++) {
    const container = node as Record<string, unknown> | unknown[];
    const part = parts[i];
    let next = getChild(container, part);
    if (next === undefined || next === null) {
      next = {};
      setChild(container, part, next, key);
    }
    if (!isMapping(next) && !Array.isArray(next)) {
      throw new TuneError(
        `cannot set '${key}': '${parts.slice(0, i + 1).join(".")}' is a value, not a section`,
      );
    }
    node = next;
  }
  setChild(node as Record<string, unknown> | unknown[], parts[parts.length - 1], value, key);
}

/** Delete a dotted key; a key that is not in the config is a TuneError. */
export function deletePath(tree: ConfigTree, key: string): void {
  const parts = key.split(".");
  let node: unknown = tree;
  for (const part of parts.slice(0, -1)) {
    node = isMapping(node) || Array.isArray(node) ? getChild(node, part) : undefined;
  }
  const last = parts[parts.length - 1];
  if (isMapping(node) && Object.hasOwn(node, last)) {
    delete node[last];
  } else if (Array.isArray(node) && /^\d+$/.test(last) && Number(last) < node.length) {
    node.splice(Number(last), 1);
  } else {
    throw new TuneError(`cannot delete '~${key}': the config has no key '${key}'`);
  }
}

function getChild(container: Record<string, unknown> | unknown[], part: string): unknown {
  if (Array.isArray(container)) return /^\d+$/.test(part) ? container[Number(part)] : undefined;
  return Object.hasOwn(container, part) ? container[part] : undefined;
}

function setChild(
  container: Record<string, unknown> | unknown[],
  part: string,
  value: unknown,
  key: string,
): void {
  if (Array.isArray(container)) {
    if (!/^\d+$/.test(part) || Number(part) > container.length) {
      throw new TuneError(`cannot set '${key}': '${part}' is not an index of the list`);
    }
    container[Number(part)] = value;
  } else {
    container[part] = value;
  }
}
