/**
 * Read dataset rows from local files: JSON (an array of objects, or JSON Lines), JSONL,
 * CSV (RFC 4180, first record is the header) and plain text.
 *
 * Text files (`source: text`) are cut into samples by `sampleBy`:
 * - "paragraph" (default): split at blank lines (lines holding only spaces/tabs); each
 *   paragraph keeps its inner single newlines; empty paragraphs are dropped.
 * - "document": the whole file is one sample (trailing newlines removed).
 * - "line": each non-empty line is one sample (Hugging Face's default for `text`).
 * Each text sample is a row `{text: ...}`, so `column: text` reads it.
 */
import { TuneError } from "../errors.ts";
import type { Row } from "./types.ts";

/** Local file formats (the `source` values that read `data_files`). */
export type LocalFormat = "json" | "csv" | "text";

/** How `.txt` files are cut into samples. */
export type TextSampleBy = "paragraph" | "document" | "line";

/** Options of `loadLocalRows`. */
export interface LocalLoadOptions {
  /** How text files are split (default "paragraph"). */
  sampleBy?: TextSampleBy;
}

/** Read a file as UTF-8 text; a missing file is a one-line TuneError naming the path. */
export function readTextFile(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new TuneError(`dataset file not found: ${path}; check dataset.data_files`);
    }
    if (e instanceof Deno.errors.IsADirectory) {
      throw new TuneError(`dataset path ${path} is a directory; pass a file in dataset.data_files`);
    }
    throw new TuneError(`could not read dataset file ${path}: ${oneLine(e)}`);
  }
}

function oneLine(e: unknown): string {
  return String(e instanceof Error ? e.message : e).split("\n")[0];
}

function asRow(value: unknown, where: string): Row {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new TuneError(
      `${where} is not a JSON object (got ${JSON.stringify(value)?.slice(0, 40)})`,
    );
  }
  return value as Row;
}

/** Rows of a JSON Lines text: one object per non-blank line. */
export function parseJsonLines(text: string, path: string): Row[] {
  const rows: Row[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new TuneError(`${path} line ${i + 1}: invalid JSON (${oneLine(e)})`);
    }
    rows.push(asRow(value, `${path} line ${i + 1}`));
  }
  return rows;
}

/**
 * Rows of a `.json` / `.jsonl` file. A `.json` file may hold an array of objects, an
 * object of equal-length column arrays, or JSON Lines (as Hugging Face's json loader accepts).
 */
export function readJsonRows(path: string): Row[] {
  const text = readTextFile(path);
  if (path.endsWith(".jsonl") || path.endsWith(".ndjson")) return parseJsonLines(text, path);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    // Not one JSON value: try JSON Lines, but report the original error when that fails too.
    try {
      return parseJsonLines(text, path);
    } catch {
      throw new TuneError(`${path}: invalid JSON (${oneLine(e)})`);
    }
  }
  if (Array.isArray(value)) return value.map((v, i) => asRow(v, `${path} item ${i}`));
  if (value !== null && typeof value === "object") return columnsToRows(value as Row, path);
  throw new TuneError(`${path} holds ${typeof value}, not an array of rows`);
}

function columnsToRows(obj: Row, path: string): Row[] {
  const names = Object.keys(obj);
  const cols = names.map((n) => obj[n]);
  if (names.length === 0 || !cols.every(Array.isArray)) {
    throw new TuneError(
      `${path} holds a JSON object, not an array of rows; expected [{...}, ...] or JSON Lines`,
    );
  }
  const n = (cols[0] as unknown[]).length;
  if (!cols.every((c) => (c as unknown[]).length === n)) {
    throw new TuneError(`${path}: column arrays have different lengths`);
  }
  const rows: Row[] = [];
  for (let i = 0; i < n; i++) {
    const row: Row = {};
    names.forEach((name, j) => (row[name] = (cols[j] as unknown[])[i]));
    rows.push(row);
  }
  return rows;
}

/** Records of an RFC 4180 CSV text (quoted fields, doubled quotes, CRLF or LF). */
export function parseCsv(text: string, path: string): string[][] {
  const records: string[][] = [];
  let record: string[] = [];
  let field = "";
  let i = 0;
  let quoted = false;
  let line = 1;
  if (text.charCodeAt(0) === 0xfeff) i = 1; // byte-order mark
  while (i < text.length) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
      } else {
        if (c === "\n") line++;
        field += c;
      }
      i++;
      continue;
    }
    if (c === '"' && field === "") quoted = true;
    else if (c === ",") {
      record.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      record.push(field);
      records.push(record);
      record = [];
      field = "";
      line++;
    } else field += c;
    i++;
  }
  if (quoted) throw new TuneError(`${path} line ${line}: unterminated quoted CSV field`);
  if (field !== "" || record.length > 0) {
    record.push(field);
    records.push(record);
  }
  return records.filter((r) => !(r.length === 1 && r[0] === ""));
}

/** Rows of a CSV file whose first record names the columns; values stay strings. */
export function readCsvRows(path: string): Row[] {
  const records = parseCsv(readTextFile(path), path);
  if (records.length === 0) return [];
  const header = records[0];
  return records.slice(1).map((rec, k) => {
    if (rec.length !== header.length) {
      throw new TuneError(
        `${path} record ${k + 2} has ${rec.length} fields but the header has ${header.length}`,
      );
    }
    const row: Row = {};
    header.forEach((name, j) => (row[name] = rec[j]));
    return row;
  });
}

/** Text samples of a text file, cut by `sampleBy` (see the module doc). */
export function splitText(text: string, sampleBy: TextSampleBy): string[] {
  const t = text.replace(/\r\n/g, "\n");
  if (sampleBy === "document") {
    const doc = t.replace(/\n+$/, "");
    return doc === "" ? [] : [doc];
  }
  if (sampleBy === "line") return t.split("\n").filter((l) => l.trim() !== "");
  return t.split(/\n[ \t]*\n/).map((p) => p.replace(/^\n+|\n+$/g, "")).filter((p) =>
    p.trim() !== ""
  );
}

/** Rows `{text}` of a text file. */
export function readTextRows(path: string, sampleBy: TextSampleBy = "paragraph"): Row[] {
  return splitText(readTextFile(path), sampleBy).map((text) => ({ text }));
}

/** Rows of every file in `files`, in order, read as `format`. */
export function loadLocalRows(
  format: LocalFormat,
  files: readonly string[],
  options: LocalLoadOptions = {},
): Row[] {
  const rows: Row[] = [];
  for (const path of files) {
    let part: Row[];
    if (format === "json") part = readJsonRows(path);
    else if (format === "csv") part = readCsvRows(path);
    else part = readTextRows(path, options.sampleBy ?? "paragraph");
    for (const r of part) rows.push(r);
  }
  return rows;
}

/** The local format a file name implies, or null. */
export function formatOfFile(path: string): LocalFormat | null {
  const p = path.toLowerCase();
  if (p.endsWith(".json") || p.endsWith(".jsonl") || p.endsWith(".ndjson")) return "json";
  if (p.endsWith(".csv")) return "csv";
  if (p.endsWith(".txt")) return "text";
  return null;
}
