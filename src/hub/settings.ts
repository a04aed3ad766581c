/**
 * Where and how to reach the Hugging Face Hub: the one reader of HF_ENDPOINT, HF_TOKEN
 * (or HUGGING_FACE_HUB_TOKEN), HF_DATASETS_SERVER, the dataset cache dir and the offline
 * switches. Every Hub request in tune (`tune download`, hub datasets) starts from
 * `hubOptionsFromEnv()`.
 */

/** Where and how to reach the hub. */
export interface HubOptions {
  /** Hub base URL without trailing slash (HF_ENDPOINT, default https://huggingface.co). */
  endpoint: string;
  /** datasets-server base URL (HF_DATASETS_SERVER, default https://datasets-server.huggingface.co). */
  datasetsServer: string;
  /** Access token (HF_TOKEN, or HUGGING_FACE_HUB_TOKEN), or null for public repos. */
  token: string | null;
  /** Dataset cache root (TUNE_DATASETS_CACHE, default $XDG_CACHE_HOME or ~/.cache, + tune/datasets). */
  cacheDir: string;
  /** Git revision (default "main"). */
  revision: string;
  /** Never touch the network, only the cache (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE = 1). */
  offline: boolean;
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env: use defaults
  }
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, "");
}

/** Hub options from the environment, with `overrides` taking precedence. */
export function hubOptionsFromEnv(overrides: Partial<HubOptions> = {}): HubOptions {
  const home = env("HOME") ?? env("USERPROFILE") ?? ".";
  const cacheRoot = env("XDG_CACHE_HOME") ?? `${home}/.cache`;
  return {
    endpoint: trimSlash(overrides.endpoint ?? env("HF_ENDPOINT") ?? "https://huggingface.co"),
    datasetsServer: trimSlash(
      overrides.datasetsServer ?? env("HF_DATASETS_SERVER") ??
        "https://datasets-server.huggingface.co",
    ),
    token: overrides.token !== undefined
      ? overrides.token
      : env("HF_TOKEN") ?? env("HUGGING_FACE_HUB_TOKEN") ?? null,
    cacheDir: overrides.cacheDir ?? env("TUNE_DATASETS_CACHE") ?? `${cacheRoot}/tune/datasets`,
    revision: overrides.revision ?? "main",
    offline: overrides.offline ??
      ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"].some((k) =>
        /^(1|true|yes|on)$/i.test(env(k) ?? "")
      ),
  };
}

/** HF_ENDPOINT or the public hub. */
export function defaultEndpoint(): string {
  return hubOptionsFromEnv().endpoint;
}

/** The token given on the command line (--hf-token), else HF_TOKEN / HUGGING_FACE_HUB_TOKEN, else null. */
export function resolveToken(flag: string | null | undefined): string | null {
  return flag || hubOptionsFromEnv().token;
}
