/**
 * The configs shipped in configs/, found relative to this module so the same code works in
 * the repo and in the `deno compile`d binary (built with `--include configs`).
 */
import { resolve } from "node:path";
import { TuneError } from "../errors.ts";
import { likelyTypoOf } from "./suggest.ts";

/** The configs/ directory. */
export const CONFIGS_DIR: URL = new URL("../../configs/", import.meta.url);

/** Names of every shipped config (`llama2/7B_lora_single_device`, no `.yaml`), sorted. */
export function listShippedConfigs(): string[] {
  shipped ??= walkConfigs();
  return [...shipped];
}

let shipped: string[] | undefined;

function walkConfigs(): string[] {
  const names: string[] = [];
  const walk = (dir: URL, prefix: string) => {
    for (const entry of Deno.readDirSync(dir)) {
      if (entry.isDirectory) walk(new URL(`${entry.name}/`, dir), `${prefix}${entry.name}/`);
      else if (entry.name.endsWith(".yaml")) names.push(prefix + entry.name.slice(0, -5));
    }
  };
  walk(CONFIGS_DIR, "");
  return names.sort();
}

/** A shipped config's name without a `.yaml`/`.yml` suffix. */
export function configName(ref: string): string {
  return ref.replace(/\.ya?ml$/, "");
}

/** The file of a shipped config, or undefined when `ref` names none. */
export function shippedConfigUrl(ref: string): URL | undefined {
  const name = configName(ref);
  return listShippedConfigs().includes(name) ? new URL(`${name}.yaml`, CONFIGS_DIR) : undefined;
}

/** Where a config came from, and its text. */
export interface ConfigSource {
  /** The shipped name, or the user's path as given. */
  label: string;
  /** True for a config shipped in configs/. */
  shipped: boolean;
  /** The shipped name (no `.yaml`) when shipped. */
  name?: string;
  text: string;
}

/**
 * Find a config: a shipped one by name (with or without `.yaml`), else a user's file by path.
 * Not found is a TuneError naming the path tried and the shipped configs.
 */
export function findConfig(ref: string): ConfigSource {
  const url = shippedConfigUrl(ref);
  if (url) {
    return {
      label: configName(ref),
      shipped: true,
      name: configName(ref),
      text: Deno.readTextFileSync(url),
    };
  }
  try {
    return { label: ref, shipped: false, text: Deno.readTextFileSync(ref) };
  } catch (e) {
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new TuneError(`cannot read config ${ref}: permission denied`);
    }
    if (!(e instanceof Deno.errors.NotFound) && !(e instanceof Deno.errors.IsADirectory)) throw e;
  }
  const tried = resolve(ref);
  const names = listShippedConfigs();
  throw new TuneError(
    `config '${ref}' not found: no file ${tried} and no shipped config of that name` +
      suggestion(likelyTypoOf(ref.replace(/\.ya?ml$/, ""), names)),
  );
}

/** `; did you mean 'x'?` for a likely typo, else where to find the names. */
function suggestion(best: string | undefined): string {
  return best ? `; did you mean '${best}'?` : "; tune ls lists the shipped configs";
}
