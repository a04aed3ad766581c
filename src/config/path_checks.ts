/**
 * Checks of the paths a resolved config names, before any work: an output folder that is a
 * file, a checkpoint folder that is missing or a file, a tokenizer or data file that is
 * missing or a folder. Each is one line naming the key, the path and the fix.
 *
 * `tune validate` checks a config that may be written before its model is downloaded (every
 * torchtune config points at /tmp/<model>), so there a missing input is a note; at the start
 * of `tune run` it is an error. A path of the wrong kind is an error in both.
 */
import { TuneError } from "../errors.ts";

/** When the check runs: `validate` (missing inputs are notes) or `run` (they are errors). */
export type PathCheckMode = "validate" | "run";

type Kind = "file" | "dir" | "missing" | "other";

function kindOf(path: string): Kind {
  try {
    const st = Deno.statSync(path);
    return st.isDirectory ? "dir" : st.isFile ? "file" : "other";
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      return "missing";
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new TuneError(`cannot read '${path}': permission denied; check its permissions`);
    }
    throw e;
  }
}

/** True for a value that names a remote or pattern path we cannot stat. */
function notLocal(p: string): boolean {
  return p.includes("://") || /[*?[]/.test(p);
}

function isSection(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The strings of a data_files value: a path, a list, or {split: path(s)}. */
function dataFilePaths(v: unknown): string[] {
  if (typeof v === "string") return [v];
  if (Array.isArray(v)) return v.flatMap(dataFilePaths);
  if (isSection(v)) return Object.values(v).flatMap(dataFilePaths);
  return [];
}

/**
 * Check the paths of a resolved recipe config. Returns notes (validate mode: inputs that
 * do not exist yet); throws a TuneError for a path that cannot work.
 */
export function checkConfigPaths(config: Record<string, unknown>, mode: PathCheckMode): string[] {
  const notes: string[] = [];
  const missingInput = (key: string, path: string, fix: string) => {
    const line = `${key} '${path}' does not exist; ${fix}`;
    if (mode === "run") throw new TuneError(line);
    notes.push(line);
  };

  // Outputs first, so a bad output_dir is reported as such even when an input key
  // interpolates it (`checkpoint_dir: ${output_dir}`).
  const visit = (v: unknown, prefix: string, outputs: boolean) => {
    if (Array.isArray(v)) {
      v.forEach((x, i) => visit(x, `${prefix}.${i}`, outputs));
      return;
    }
    if (!isSection(v)) return;
    for (const [key, value] of Object.entries(v)) {
      const path = prefix ? `${prefix}.${key}` : key;
      const isOutput = key === "output_dir" || key === "log_dir";
      if (key === "data_files") {
        if (!outputs && value != null) {
          for (const f of dataFilePaths(value)) if (!notLocal(f)) checkDataFile(path, f);
        }
      } else if (typeof value === "string" && value !== "" && !notLocal(value)) {
        if (isOutput === outputs) checkKey(key, path, value, prefix);
      }
      visit(value, path, outputs);
    }
  };

  const checkKey = (key: string, path: string, value: string, section: string) => {
    const kind = kindOf(value);
    if (key === "output_dir" || key === "log_dir") {
      if (kind === "file" || kind === "other") {
        throw new TuneError(
          `${path} '${value}' is a file, not a folder; name a folder (it is created when missing)`,
        );
      }
    } else if (key === "checkpoint_dir") {
      if (kind === "file" || kind === "other") {
        throw new TuneError(
          `${path} '${value}' is a file, not a folder; name the folder that holds the checkpoint files`,
        );
      }
      // With model_init: random (teacher_model_init for teacher_checkpointer) that
      // checkpointer only writes: tiny seeded models.
      const initKey = section.replace(/checkpointer$/, "model_init");
      const writesOnly = section.endsWith("checkpointer") && config[initKey] === "random";
      if (kind === "missing" && !writesOnly) {
        missingInput(
          path,
          value,
          "download the model there (tune download <repo_id> --output-dir DIR) or fix the path",
        );
      }
    } else if (key === "path" && section.split(".").pop()?.startsWith("tokenizer")) {
      if (kind === "missing") {
        missingInput(path, value, "point it at the model's tokenizer file");
      }
    }
  };

  const checkDataFile = (path: string, file: string) => {
    const kind = kindOf(file);
    if (kind === "dir") {
      throw new TuneError(
        `${path} '${file}' is a folder; name the data file(s) in it (a path, a list of paths, or {split: path})`,
      );
    }
    if (kind === "missing") missingInput(path, file, "fix the path or the working folder");
  };

  visit(config, "", true);
  visit(config, "", false);
  return notes;
}
