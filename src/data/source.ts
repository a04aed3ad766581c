/**
 * `source` + `data_files` + `split` -> raw rows, as Hugging Face's `load_dataset` reads them:
 * - `source: json | csv | text` reads local `data_files` (a path, a list of paths, or a map
 *   from split name to path(s)); a path or list forms the split "train".
 * - `source: owner/name` downloads the split from the Hugging Face Hub (src/hub/datasets.ts); given
 *   `data_files` too, it reads those local files instead (format from the file extension).
 * - `split` may slice: "train[:1000]", "train[100:200]", "train[:10%]", "train[-50:]";
 *   percentages round to the nearest row.
 */
import { TuneError } from "../errors.ts";
import { downloadHubDataset, type HubOptions, isRepoId } from "../hub/mod.ts";
import { formatOfFile, loadLocalRows, type LocalFormat, type TextSampleBy } from "./load_local.ts";
import type { Row } from "./types.ts";

/** `data_files` as configs give it. */
export type DataFiles = string | string[] | Record<string, string | string[]>;

/** Options of `loadRows`. */
export interface SourceOptions {
  /** "json", "csv", "text" or a Hugging Face repo id. */
  source: string;
  dataFiles?: DataFiles | null;
  /** Split name with optional slice (default "train"). */
  split?: string;
  /** How text files are cut into samples (load_local.ts). */
  sampleBy?: TextSampleBy;
  /** Hub settings (defaults from the environment). */
  hub?: Partial<HubOptions>;
  /** Hub datasets: only the data files under this folder of the repo (torchtune's data_dir). */
  dataDir?: string;
  /** Hub datasets: the subset (load_dataset's `name`, a config of the datasets server). */
  subset?: string;
}

/** Loaded rows and a label naming where they came from. */
export interface LoadedRows {
  rows: Row[];
  /** File path(s) or repo id, for messages. */
  label: string;
}

/** A parsed split: its name and optional [start, end) slice bounds. */
export interface SplitSpec {
  name: string;
  start: SliceBound | null;
  end: SliceBound | null;
}

/** One bound of a split slice. */
export interface SliceBound {
  value: number;
  percent: boolean;
}

/** Parse "train", "train[:100]", "train[10%:50%]". */
export function parseSplit(split: string): SplitSpec {
  const m = /^([\w.-]+)(?:\[\s*(-?\d+%?)?\s*:\s*(-?\d+%?)?\s*\])?$/.exec(split.trim());
  if (!m) {
    throw new TuneError(
      `dataset.split ${
        JSON.stringify(split)
      } is not understood; use e.g. train, train[:1000] or train[:10%]`,
    );
  }
  const bound = (s: string | undefined): SliceBound | null =>
    s === undefined ? null : { value: parseInt(s, 10), percent: s.endsWith("%") };
  return { name: m[1], start: bound(m[2]), end: bound(m[3]) };
}

/** Apply a split's slice to loaded rows (Python slice semantics, percent of the row count). */
export function sliceRows<T>(rows: readonly T[], spec: SplitSpec): T[] {
  const n = rows.length;
  const resolve = (b: SliceBound | null, dflt: number) => {
    if (b === null) return dflt;
    let v = b.percent ? Math.round((b.value * n) / 100) : b.value;
    if (v < 0) v += n;
    return Math.min(Math.max(v, 0), n);
  };
  return rows.slice(resolve(spec.start, 0), resolve(spec.end, n));
}

function filesOf(dataFiles: DataFiles, split: string): string[] {
  if (typeof dataFiles === "string") return splitCheck([dataFiles], split);
  if (Array.isArray(dataFiles)) return splitCheck(dataFiles.map(String), split);
  const f = dataFiles[split];
  if (f === undefined) {
    throw new TuneError(
      `dataset.data_files has no split ${split}; it has ${Object.keys(dataFiles).join(", ")}`,
    );
  }
  return typeof f === "string" ? [f] : f.map(String);
}

function splitCheck(files: string[], split: string): string[] {
  if (split !== "train") {
    throw new TuneError(
      `local dataset.data_files form the split "train", not "${split}"; set dataset.split=train or give data_files as {${split}: PATH}`,
    );
  }
  if (files.length === 0) {
    throw new TuneError("dataset.data_files is empty; pass dataset.data_files=PATH");
  }
  return files;
}

const LOCAL_SOURCES: Record<string, LocalFormat> = {
  json: "json",
  jsonl: "json",
  csv: "csv",
  text: "text",
  txt: "text",
};

/** Load the rows of a split (see the module doc). */
export async function loadRows(options: SourceOptions): Promise<LoadedRows> {
  const spec = parseSplit(options.split ?? "train");
  const source = options.source;
  if (!source) {
    throw new TuneError(
      "dataset.source is not set; pass dataset.source=text dataset.data_files=PATH (or json, csv, or a Hugging Face repo id)",
    );
  }
  const local = LOCAL_SOURCES[source];
  if (local !== undefined) {
    if (options.dataFiles == null) {
      throw new TuneError(`dataset.source=${source} needs dataset.data_files=PATH`);
    }
    const files = filesOf(options.dataFiles, spec.name);
    const rows = loadLocalRows(local, files, { sampleBy: options.sampleBy });
    return { rows: sliceRows(rows, spec), label: files.join(", ") };
  }
  if (source === "parquet" || source === "arrow") {
    throw new TuneError(
      `dataset.source=${source} is not supported for local files; convert them to JSON Lines (e.g. pandas: df.to_json(PATH, orient="records", lines=True)) and pass dataset.source=json`,
    );
  }
  if (isRepoId(source) && options.dataFiles != null) {
    // A hub source with data_files: read the local files (format from their extension), so
    // `dataset.data_files=PATH` alone switches a builder such as alpaca_dataset to local data.
    const files = filesOf(options.dataFiles, spec.name);
    const format = formatOfFile(files[0]);
    if (format === null || files.some((f) => formatOfFile(f) !== format)) {
      throw new TuneError(
        `cannot tell the format of dataset.data_files ${
          files.join(", ")
        }; set dataset.source to json, csv or text`,
      );
    }
    const rows = loadLocalRows(format, files, { sampleBy: options.sampleBy });
    return { rows: sliceRows(rows, spec), label: files.join(", ") };
  }
  if (isRepoId(source)) {
    const got = await downloadHubDataset(source, spec.name, options.hub, {
      dataDir: options.dataDir,
      subset: options.subset,
    });
    const rows = loadLocalRows(got.format, got.files, { sampleBy: options.sampleBy });
    return { rows: sliceRows(rows, spec), label: source };
  }
  throw new TuneError(
    `dataset.source ${
      JSON.stringify(source)
    } is neither a file type (json, csv, text) nor a Hugging Face repo id (owner/name)`,
  );
}
