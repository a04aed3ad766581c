/**
 * Download a Hugging Face Hub dataset's data files for one split, with a local cache.
 *
 * 1. `GET {HF_ENDPOINT}/api/datasets/{repo}/revision/{revision}` lists the repo's files
 *    (`siblings`). JSON, JSONL and CSV files of the split are chosen (`selectDataFiles`) and
 *    fetched from `{HF_ENDPOINT}/datasets/{repo}/resolve/{revision}/{path}`.
 * 2. A repo with only parquet files is read through the datasets-server rows API
 *    (`{datasets server}/rows?dataset=..&config=..&split=..&offset=..&length=100`, paged) and
 *    cached as JSON Lines; the config comes from `/splits?dataset=..`.
 *
 * Files land in `{cacheDir}/{owner}--{name}/{revision}/` (written to a temporary name, then
 * renamed) with a manifest per split; once the manifest exists the cache is used without any
 * network access (delete the folder to refresh). `HF_TOKEN` is sent as a bearer token;
 * with HF_HUB_OFFLINE=1 only the cache is read (settings.ts reads the environment).
 */
import { TuneError } from "../errors.ts";
import { type HubFailureText, hubRequest } from "./http.ts";
import { type HubOptions, hubOptionsFromEnv } from "./settings.ts";

/** The format of downloaded data files (a `LocalFormat` of src/data/load_local.ts). */
export type HubDataFormat = "json" | "csv";

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Downloaded data of one split: local files in one format. */
export interface HubDataFiles {
  format: HubDataFormat;
  files: string[];
}

const REPO_ID = /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/;

/** True when `source` looks like a hub repo id ("owner/name"). */
export function isRepoId(source: string): boolean {
  return REPO_ID.test(source);
}

const DATA_EXT = [".jsonl", ".json", ".csv"];
const METADATA_FILES = new Set([
  "dataset_info.json",
  "dataset_infos.json",
  "dataset_dict.json",
  "state.json",
  "config.json",
  "package.json",
  "tokenizer.json",
]);
const SPLIT_WORDS: Record<string, string[]> = {
  train: ["train", "training"],
  validation: ["validation", "valid", "val", "dev", "eval"],
  test: ["test", "testing"],
};

function splitWords(split: string): string[] {
  return SPLIT_WORDS[split] ?? [split];
}

function mentions(path: string, words: string[]): boolean {
  // A split name as a whole word of the path: data/train-0000.json, train.jsonl, test/x.csv.
  return words.some((w) => new RegExp(`(^|[/_.-])${w}([/_.-]|\\d|$)`, "i").test(path));
}

/**
 * The data files of `split` among a repo's file paths, as Hugging Face's default data-file
 * patterns pick them: files whose path names the split; else, for "train", every data file
 * that names no other split.
 */
export function selectDataFiles(
  paths: readonly string[],
  split: string,
  extensions: readonly string[] = DATA_EXT,
): string[] {
  const data = paths.filter((p) => {
    const base = p.split("/").pop()!;
    if (p.split("/").some((seg) => seg.startsWith("."))) return false;
    if (METADATA_FILES.has(base)) return false;
    return extensions.some((e) => p.toLowerCase().endsWith(e));
  }).sort();
  const named = data.filter((p) => mentions(p, splitWords(split)));
  if (named.length > 0) return named;
  if (split !== "train") return [];
  const others = Object.entries(SPLIT_WORDS).filter(([s]) => s !== "train").flatMap(([, w]) => w);
  return data.filter((p) => !mentions(p, others));
}

function formatOf(files: readonly string[], repo: string): HubDataFormat {
  const fmts = new Set(files.map((f) => (f.toLowerCase().endsWith(".csv") ? "csv" : "json")));
  if (fmts.size > 1) {
    // Mixed formats: keep it explicit rather than guess which files matter.
    throw new TuneError(
      `dataset ${repo} mixes JSON and CSV data files; download it and pass dataset.source=json dataset.data_files=PATH`,
    );
  }
  return [...fmts][0] as HubDataFormat;
}

/** How a hub dataset download explains a failed request. */
function failureText(repo: string): HubFailureText {
  return {
    unreachable: (origin, why) =>
      `could not reach ${origin} to download dataset ${repo} (${why}); ` +
      `download it and pass \`dataset.source=json dataset.data_files=PATH\``,
    denied: (status, origin) =>
      `access to dataset ${repo} was refused by ${origin} (HTTP ${status}); ` +
      `check the name, accept its terms on the hub, and set HF_TOKEN`,
    notFound: (path, origin) =>
      `dataset ${repo} (or its file ${path}) was not found on ${origin} (HTTP 404); check dataset.source`,
    other: (status, url) => `downloading dataset ${repo} failed: HTTP ${status} from ${url}`,
  };
}

function hubFetch(url: string, repo: string, opts: HubOptions): Promise<Response> {
  return hubRequest(url, { token: opts.token }, failureText(repo));
}

async function hubJson(url: string, repo: string, opts: HubOptions): Promise<unknown> {
  const res = await hubFetch(url, repo, opts);
  try {
    return await res.json();
  } catch (e) {
    throw new TuneError(`${url} did not return JSON (${String(e).split("\n")[0]})`);
  }
}

async function writeAtomic(path: string, data: ReadableStream<Uint8Array> | string) {
  const dir = path.slice(0, path.lastIndexOf("/"));
  await Deno.mkdir(dir, { recursive: true });
  const tmp = `${path}.tmp-${Deno.pid}-${Date.now()}`;
  try {
    if (typeof data === "string") await Deno.writeTextFile(tmp, data);
    else {
      const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
      await data.pipeTo(file.writable);
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

function repoDir(repo: string, opts: HubOptions): string {
  return `${opts.cacheDir}/${repo.replace("/", "--")}/${opts.revision.replace(/[^\w.-]/g, "_")}`;
}

/**
 * Local files holding `split` of hub dataset `repo`, downloading them into the cache the
 * first time (see the module doc). Network failures are one-line TuneErrors.
 */
export async function downloadHubDataset(
  repo: string,
  split: string,
  options: Partial<HubOptions> = {},
  where: { dataDir?: string | null; subset?: string | null } = {},
): Promise<HubDataFiles> {
  const dataDir = where.dataDir ?? null, subset = where.subset ?? null;
  const opts = hubOptionsFromEnv(options);
  if (!isRepoId(repo)) {
    throw new TuneError(
      `dataset.source ${JSON.stringify(repo)} is not a Hugging Face repo id (owner/name)`,
    );
  }
  const dir = repoDir(repo, opts);
  const key = [subset, dataDir, split].filter((x) => x).join("/").replace(/[^\w.-]/g, "_");
  const manifestPath = `${dir}/${key}.manifest.json`;
  if (exists(manifestPath)) {
    const m = JSON.parse(Deno.readTextFileSync(manifestPath)) as HubDataFiles;
    if (m.files.every(exists)) return m;
  }

  if (opts.offline) {
    throw new TuneError(
      `dataset ${repo} (split ${split}) is not in the cache ${opts.cacheDir} and HF_HUB_OFFLINE is set; ` +
        `download it and pass \`dataset.source=json dataset.data_files=PATH\``,
    );
  }
  const rev = encodeURIComponent(opts.revision);
  const info = await hubJson(
    `${opts.endpoint}/api/datasets/${repo}/revision/${rev}`,
    repo,
    opts,
  ) as {
    siblings?: { rfilename: string }[];
  };
  // torchtune's data_dir, or a subset (load_dataset's `name`) kept as a folder: only the
  // files under that folder of the repo
  const all = (info.siblings ?? []).map((s) => s.rfilename);
  const folder = dataDir ?? (subset && all.some((p) => p.startsWith(`${subset}/`)) ? subset : "");
  const under = folder ? `${folder.replace(/^\/+|\/+$/g, "")}/` : "";
  // a subset with no folder of its own: the datasets server knows its rows
  const paths = subset && !folder ? [] : all.filter((p) => p.startsWith(under));
  const chosen = selectDataFiles(paths, split);
  let result: HubDataFiles;
  if (chosen.length > 0) {
    const format = formatOf(chosen, repo);
    const files: string[] = [];
    for (const p of chosen) {
      const local = `${dir}/files/${p}`;
      const url = `${opts.endpoint}/datasets/${repo}/resolve/${rev}/${
        p.split("/").map(encodeURIComponent).join("/")
      }`;
      const res = await hubFetch(url, repo, opts);
      await writeAtomic(local, res.body!);
      files.push(local);
    }
    result = { format, files };
  } else if (dataDir && selectDataFiles(paths, split, [".parquet"]).length > 0) {
    // the rows API serves whole configs, not one folder's files
    throw new TuneError(
      `dataset ${repo} keeps split ${split} under ${under} only as parquet; download those files, convert them to JSON Lines and pass dataset.source=json dataset.data_files=PATH`,
    );
  } else if (subset || selectDataFiles(paths, split, [".parquet"]).length > 0) {
    // parquet-only (or a scripted dataset with configs): the datasets server's rows
    const local = `${dir}/rows/${key}.jsonl`;
    await writeAtomic(local, await fetchRows(repo, split, opts, subset));
    result = { format: "json", files: [local] };
  } else {
    throw new TuneError(
      `dataset ${repo} has no JSON, JSONL, CSV or parquet data files for split ${split}; ` +
        `download it and pass \`dataset.source=json dataset.data_files=PATH\``,
    );
  }
  await writeAtomic(manifestPath, JSON.stringify(result));
  return result;
}

interface RowsPage {
  rows?: { row_idx: number; row: Record<string, unknown>; truncated_cells?: string[] }[];
  num_rows_total?: number;
}

const PAGE = 100; // the rows API's maximum page length

/** Every row of a split from the datasets-server rows API, as JSON Lines text. */
async function fetchRows(
  repo: string,
  split: string,
  opts: HubOptions,
  subset: string | null,
): Promise<string> {
  const ds = encodeURIComponent(repo);
  const splits = await hubJson(`${opts.datasetsServer}/splits?dataset=${ds}`, repo, opts) as {
    splits?: { config: string; split: string }[];
  };
  const configs = (splits.splits ?? []).filter((s) => s.split === split).map((s) => s.config);
  if (configs.length === 0) {
    throw new TuneError(
      `dataset ${repo} has no split ${split} on the datasets server; check dataset.split`,
    );
  }
  if (subset !== null && !configs.includes(subset)) {
    throw new TuneError(
      `dataset ${repo} has no subset ${subset} with split ${split}; its subsets: ${
        configs.join(", ")
      }; set dataset.subset`,
    );
  }
  const config = subset ?? (configs.includes("default") ? "default" : configs[0]);
  const url = (offset: number) =>
    `${opts.datasetsServer}/rows?dataset=${ds}&config=${encodeURIComponent(config)}&split=${
      encodeURIComponent(split)
    }&offset=${offset}&length=${PAGE}`;
  const first = await hubJson(url(0), repo, opts) as RowsPage;
  const total = first.num_rows_total ?? first.rows?.length ?? 0;
  const pages: RowsPage[] = [first];
  const offsets: number[] = [];
  for (let o = PAGE; o < total; o += PAGE) offsets.push(o);
  // A few requests in flight at once; pages are stored by offset so order is preserved.
  const CONCURRENCY = 4;
  const rest: RowsPage[] = new Array(offsets.length);
  for (let k = 0; k < offsets.length; k += CONCURRENCY) {
    const batch = offsets.slice(k, k + CONCURRENCY);
    const got = await Promise.all(
      batch.map((o) => hubJson(url(o), repo, opts) as Promise<RowsPage>),
    );
    got.forEach((p, j) => (rest[k + j] = p));
  }
  pages.push(...rest);
  const lines: string[] = [];
  for (const page of pages) {
    for (const r of page.rows ?? []) {
      if (r.truncated_cells && r.truncated_cells.length > 0) {
        throw new TuneError(
          `the datasets server truncated row ${r.row_idx} of ${repo}; download the parquet files and convert them to JSON Lines, then pass dataset.source=json dataset.data_files=PATH`,
        );
      }
      lines.push(JSON.stringify(r.row));
    }
  }
  if (lines.length !== total) {
    throw new TuneError(
      `the datasets server returned ${lines.length} of ${total} rows of ${repo}; try again`,
    );
  }
  return lines.join("\n") + "\n";
}
