/**
 * Resolution: check a merged config tree (YAML + overrides) against a schema, parse every
 * value by its declared type, apply defaults, and check each `_component_` section against
 * the registered builder's own params. The result is what a recipe's `main` receives.
 */
import { TuneError } from "../errors.ts";
import { CliText } from "./overrides.ts";
import { allComponentNames, componentsOfKind, findComponent } from "./registry.ts";
import type { ComponentSection, ParamSchema, ParamSpec } from "./schema.ts";
import { didYouMean, didYouMeanKey } from "./suggest.ts";
import { checkBound } from "./value_bounds.ts";
import { isMapping, parseYamlValue } from "./yaml.ts";

/** Where a section sits, for messages. */
interface Where {
  /** The recipe whose config this is (named in unknown-key errors). */
  recipe: string;
  /** Dotted prefix of the section ("" at the top). */
  prefix: string;
  /** The component whose params these are, when inside a `_component_` section. */
  component?: string;
  /** The recipe's top-level alias keys (`lora_rank` for `model.lora_rank`), for suggestions. */
  aliases?: readonly string[];
}

/**
 * Resolve a whole config for a recipe. Unknown keys, wrong types, missing required keys,
 * unknown components: each is a one-line TuneError.
 */
export function resolveConfig(
  schema: ParamSchema,
  tree: Record<string, unknown>,
  recipe: string,
  aliases: readonly string[] = [],
): Record<string, unknown> {
  return resolveSection(schema, tree, { recipe, prefix: "", aliases });
}

/** `section.key` for every key of the builders this section's component sections name. */
function componentKeys(schema: ParamSchema, tree: Record<string, unknown>): string[] {
  const keys: string[] = [];
  for (const [name, spec] of Object.entries(schema)) {
    const section = tree[name];
    if (spec.type !== "component" || !isMapping(section)) continue;
    const component = findComponent(String(section._component_));
    if (component) keys.push(...Object.keys(component.params).map((k) => `${name}.${k}`));
  }
  return keys;
}

/**
 * A key of one of this section's component sections that is named exactly `key` (so
 * `lora_dropout=0.1` at the top points at `model.lora_dropout`), or null.
 */
function sectionKeyNamed(
  schema: ParamSchema,
  tree: Record<string, unknown>,
  key: string,
  prefix: string,
): string | null {
  for (const [name, spec] of Object.entries(schema)) {
    const section = tree[name];
    if (spec.type !== "component" || !isMapping(section)) continue;
    const component = findComponent(String(section._component_));
    if (component && Object.hasOwn(component.params, key)) return dotted(prefix, `${name}.${key}`);
  }
  return null;
}

/** Resolve one section's keys against `schema`. */
export function resolveSection(
  schema: ParamSchema,
  tree: Record<string, unknown>,
  where: Where,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(tree)) {
    if (key === "_component_" && where.component) continue;
    if (!Object.hasOwn(schema, key)) {
      const valid = [
        ...Object.keys(schema).map((k) => dotted(where.prefix, k)),
        ...(where.prefix === "" ? [...(where.aliases ?? []), ...componentKeys(schema, tree)] : []),
      ];
      const inside = where.component ? ` (component ${where.component})` : "";
      const nested = sectionKeyNamed(schema, tree, key, where.prefix);
      throw new TuneError(
        `unknown key '${dotted(where.prefix, key)}' for recipe ${where.recipe}${inside}` +
          (nested
            ? `; did you mean '${nested}'?`
            : didYouMeanKey(dotted(where.prefix, key), valid)),
      );
    }
  }
  // Plain keys first, then component sections, so a typo in a plain key is reported the
  // same way whatever the components; the result keeps the schema's key order.
  const entries = Object.entries(schema);
  const resolved = new Map<string, unknown>();
  for (const pass of [false, true]) {
    for (const [key, spec] of entries) {
      if ((spec.type === "component") !== pass) continue;
      const path = dotted(where.prefix, key);
      const given = Object.hasOwn(tree, key) ? tree[key] : undefined;
      resolved.set(key, resolveValue(spec, given, path, where));
    }
  }
  for (const [key] of entries) out[key] = resolved.get(key);
  return out;
}

function resolveValue(spec: ParamSpec, given: unknown, path: string, where: Where): unknown {
  if (given === undefined) {
    if (spec.required) {
      throw new TuneError(
        `missing key '${path}' required by ${owner(where)}: ${spec.doc}`,
      );
    }
    if (spec.type === "section") return resolveSection(spec.params, {}, { ...where, prefix: path });
    const d = "default" in spec ? spec.default : undefined;
    return d === undefined ? null : structuredClone(d);
  }
  if (isNull(given)) {
    if (spec.required) {
      throw new TuneError(`key '${path}' required by ${owner(where)} cannot be null: ${spec.doc}`);
    }
    return null;
  }
  switch (spec.type) {
    case "int":
    case "float": {
      const n = parseNumber(spec.type, given, path);
      checkBound(path, n, spec.bound);
      return n;
    }
    case "bool":
      return parseBool(given, path);
    case "string": {
      const s = parseString(given, path);
      if (spec.choices && !spec.choices.includes(s)) {
        throw new TuneError(
          `wrong type for '${path}': expected one of ${spec.choices.join("|")}, got '${s}'`,
        );
      }
      return s;
    }
    case "string[]":
      return parseList(given, path, spec.type).map((v) => parseString(v, path, "string[]"));
    case "int[]":
    case "float[]": {
      const elem = spec.type === "int[]" ? "int" : "float";
      return parseList(given, path, spec.type).map((v) => {
        const n = parseNumber(elem, v, path, spec.type);
        checkBound(path, n);
        return n;
      });
    }
    case "section": {
      const v = given instanceof CliText ? parseYamlValue(given.text, path) : given;
      if (!isMapping(v)) {
        throw new TuneError(`wrong type for '${path}': expected a section, got ${show(given)}`);
      }
      return resolveSection(spec.params, v, { ...where, prefix: path });
    }
    case "component": {
      if (Array.isArray(given)) {
        return given.map((g, i) => resolveComponent(spec.kind, g, `${path}.${i}`, where));
      }
      return resolveComponent(spec.kind, given, path, where);
    }
    case "any":
      return plain(given);
  }
}

/** Resolve a `_component_` section of a kind against its builder's params. */
export function resolveComponent(
  kind: string,
  given: unknown,
  path: string,
  where: Where,
): ComponentSection {
  if (!isMapping(given)) {
    throw new TuneError(
      `wrong type for '${path}': expected a section with _component_ (a ${kind} builder), got ${
        show(given)
      }`,
    );
  }
  const nameRaw = given._component_;
  const kindNames = componentsOfKind(kind as never).flatMap((c) => [c.name, ...(c.aliases ?? [])]);
  if (nameRaw === undefined || nameRaw === null) {
    const eg = kindNames.length ? ` (e.g. ${kindNames[0]})` : "";
    throw new TuneError(`section '${path}' needs a _component_ naming a ${kind} builder${eg}`);
  }
  const name = nameRaw instanceof CliText ? nameRaw.text : String(nameRaw);
  // a user's reward function in a local module (src/rlhf/rewards.ts loads it at run start)
  if (kind === "reward" && name.startsWith("file:")) {
    const extra = Object.keys(given).filter((k) => k !== "_component_");
    if (extra.length) {
      throw new TuneError(`'${path}.${extra[0]}': a file: reward takes no other keys`);
    }
    return { _component_: name };
  }
  const spec = findComponent(name);
  if (!spec) {
    const candidates = kindNames.length ? kindNames : allComponentNames();
    throw new TuneError(
      `unknown _component_ '${name}' at '${path}._component_'` + didYouMean(name, candidates),
    );
  }
  if (spec.kind !== kind) {
    throw new TuneError(
      `'${path}._component_' is ${spec.name}, a ${spec.kind} builder; '${path}' needs a ${kind} builder`,
    );
  }
  const args = resolveSection(spec.params, given, { ...where, prefix: path, component: spec.name });
  return { _component_: spec.name, ...args };
}

function parseNumber(type: "int" | "float", v: unknown, path: string, listType?: string): number {
  let n: number | undefined;
  if (typeof v === "number") n = v;
  else if (v instanceof CliText || typeof v === "string") {
    const t = (v instanceof CliText ? v.text : v).trim();
    if (t !== "" && /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) n = Number(t);
    else if (type === "float" && /^[+-]?(inf|\.inf)$/i.test(t)) {
      n = t.startsWith("-") ? -Infinity : Infinity;
    }
  }
  if (n === undefined || Number.isNaN(n) || (type === "int" && !Number.isInteger(n))) {
    throw typeError(path, listType ?? type, v);
  }
  return n;
}

function parseBool(v: unknown, path: string): boolean {
  if (typeof v === "boolean") return v;
  if (v instanceof CliText || typeof v === "string") {
    const t = (v instanceof CliText ? v.text : v).trim().toLowerCase();
    if (t === "true") return true;
    if (t === "false") return false;
  }
  throw typeError(path, "bool", v);
}

function parseString(v: unknown, path: string, listType?: string): string {
  if (v instanceof CliText) return v.text;
  if (typeof v === "string") return v;
  if (typeof v === "number") return String(v);
  throw typeError(path, listType ?? "string", v);
}

/** A list from YAML, from `[a,b]` flow syntax, or from comma-separated text. */
function parseList(v: unknown, path: string, type: string): unknown[] {
  if (Array.isArray(v)) return v;
  if (v instanceof CliText || typeof v === "string") {
    const t = (v instanceof CliText ? v.text : v).trim();
    if (t.startsWith("[")) {
      const parsed = parseYamlValue(t, path);
      if (Array.isArray(parsed)) return parsed;
      throw typeError(path, type, v);
    }
    return t === "" ? [] : t.split(",").map((s) => s.trim());
  }
  if (typeof v === "number") return [v];
  throw typeError(path, type, v);
}

function isNull(v: unknown): boolean {
  if (v === null) return true;
  if (v instanceof CliText) return ["null", "Null", "NULL", "None", "~"].includes(v.text.trim());
  return false;
}

/**
 * Free-form (`any`) values: command-line text in YAML flow syntax (`[a, b]`, `{k: v}`)
 * becomes that list or mapping; any other text stays text as typed (`prompt=42` is "42").
 * Set a mapping key by key with dotted overrides (`prompt.user=...`).
 */
function plain(v: unknown): unknown {
  if (v instanceof CliText) {
    if (/^\s*[[{]/.test(v.text)) {
      try {
        const parsed = parseYamlValue(v.text, "value");
        if (typeof parsed === "object" && parsed !== null) return parsed;
      } catch {
        // Not YAML after all (e.g. a prompt starting with "[INST]"): keep the text.
      }
    }
    return v.text;
  }
  if (Array.isArray(v)) return v.map(plain);
  if (isMapping(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

function typeError(path: string, type: string, v: unknown): TuneError {
  return new TuneError(`wrong type for '${path}': expected ${type}, got ${show(v)}`);
}

function show(v: unknown): string {
  if (v instanceof CliText) return `'${v.text}'`;
  if (typeof v === "string") return `'${v}'`;
  if (Array.isArray(v)) return "a list";
  if (isMapping(v)) return "a section";
  return String(v);
}

function owner(where: Where): string {
  return where.component ? `component ${where.component}` : `recipe ${where.recipe}`;
}

function dotted(prefix: string, key: string): string {
  return prefix ? `${prefix}.${key}` : key;
}

/**
 * Turn command-line text in a merged (unresolved) tree into YAML values for display
 * (`tune cat`): by the declared type where the schema (or a named component's params)
 * declares the key, else as plain text. Nothing is validated here.
 */
export function displayTree(tree: unknown, schema: ParamSchema | undefined): unknown {
  if (Array.isArray(tree)) return tree.map((x) => displayTree(x, schema));
  if (!isMapping(tree)) return tree instanceof CliText ? guessScalar(tree.text) : tree;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(tree)) {
    const spec = schema && Object.hasOwn(schema, k) ? schema[k] : undefined;
    let sub: ParamSchema | undefined;
    if (spec?.type === "section") sub = spec.params;
    if (spec?.type === "component" && isMapping(v)) {
      const name = v._component_ instanceof CliText ? v._component_.text : v._component_;
      sub = typeof name === "string" ? findComponent(name)?.params : undefined;
    }
    if (v instanceof CliText && spec && spec.type !== "section" && spec.type !== "component") {
      try {
        out[k] = resolveValue(spec, v, k, { recipe: "", prefix: "" });
      } catch {
        out[k] = v.text;
      }
    } else {
      out[k] = displayTree(v, sub);
    }
  }
  return out;
}

/** Undeclared command-line text shown as YAML would read it (numbers, bools, [lists]). */
function guessScalar(text: string): unknown {
  if (
    /^(true|false|null|[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)$/.test(text) || /^\[.*\]$/.test(text)
  ) {
    try {
      return parseYamlValue(text, "value");
    } catch {
      return text;
    }
  }
  return text;
}
