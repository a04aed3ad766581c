/**
 * Loading a config for a recipe: find it, parse the YAML, apply the recipe's key aliases,
 * apply command-line overrides, interpolate `${key}` references, resolve against the
 * recipe's params. Precedence: params' defaults < YAML < command line.
 */
import { applyKeyAliases, applyOverrides, type Override } from "./overrides.ts";
import { interpolate } from "./interpolate.ts";
import type { RecipeDefinition } from "./recipe.ts";
import { resolveConfig } from "./resolve.ts";
import type { ParamSchema, ResolvedConfig } from "./schema.ts";
import { type ConfigSource, findConfig } from "./shipped.ts";
import { type ConfigTree, parseConfigYaml } from "./yaml.ts";

/** A config file merged with overrides, before resolution. */
export interface MergedConfig {
  source: ConfigSource;
  tree: ConfigTree;
}

/** Find, parse, alias and override a config (no defaults, no type parsing yet). */
export function loadMerged(
  ref: string,
  overrides: readonly Override[],
  aliases: Readonly<Record<string, string>> = {},
): MergedConfig {
  const source = findConfig(ref);
  const tree = parseConfigYaml(source.text, source.label);
  applyKeyAliases(tree, aliases);
  applyOverrides(tree, overrides, aliases);
  return { source, tree };
}

/** Resolve a merged tree against a recipe: interpolation, types, defaults, components. */
export function resolveTree<S extends ParamSchema>(
  recipe: Pick<RecipeDefinition<S>, "name" | "params" | "keyAliases">,
  tree: ConfigTree,
): ResolvedConfig<S> {
  const copy = structuredCloneTree(tree);
  interpolate(copy, (key) => {
    const spec = Object.hasOwn(recipe.params, key) ? recipe.params[key] : undefined;
    return spec && "default" in spec ? spec.default ?? undefined : undefined;
  });
  const aliases = Object.keys(recipe.keyAliases ?? {});
  return resolveConfig(recipe.params, copy, recipe.name, aliases) as ResolvedConfig<S>;
}

/** The whole path from a config reference and overrides to a recipe's resolved config. */
export function loadRecipeConfig<S extends ParamSchema>(
  recipe: Pick<RecipeDefinition<S>, "name" | "params" | "keyAliases">,
  ref: string,
  overrides: readonly Override[],
): { source: ConfigSource; config: ResolvedConfig<S> } {
  const { source, tree } = loadMerged(ref, overrides, recipe.keyAliases);
  return { source, config: resolveTree(recipe, tree) };
}

/**
 * The recipe named in a config's header comment (`# tune run [launcher flags] <recipe> --config ...`),
 * as torchtune configs start; undefined when there is none.
 */
export function recipeFromHeader(text: string): string | undefined {
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (t === "") continue;
    if (!t.startsWith("#")) return undefined;
    const m = /\btune\s+(.*)$/.exec(t);
    if (!m) continue;
    const tokens = m[1].split(/\s+/);
    for (let i = 0; i < tokens.length; i++) {
      const tok = tokens[i];
      if (tok === "run") continue;
      if (tok.startsWith("--")) {
        if (!tok.includes("=")) i++;
        continue;
      }
      return tok;
    }
  }
  return undefined;
}

/** Deep copy that keeps CliText instances (structuredClone would turn them into plain objects). */
function structuredCloneTree<T>(v: T): T {
  if (Array.isArray(v)) return v.map(structuredCloneTree) as T;
  if (typeof v === "object" && v !== null && Object.getPrototypeOf(v) === Object.prototype) {
    return Object.fromEntries(
      Object.entries(v).map(([k, x]) => [k, structuredCloneTree(x)]),
    ) as T;
  }
  return v;
}
