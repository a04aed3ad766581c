/** Small file-system helpers shared by the checkpoint and data loaders. */
import { TuneError } from "../errors.ts";

/** Open `path` for reading; a TuneError "cannot open <kind> file <path>: <why>" if it cannot be. */
export function openForReading(path: string, kind: string): Deno.FsFile {
  try {
    return Deno.openSync(path, { read: true });
  } catch (e) {
    throw new TuneError(`cannot open ${kind} file ${path}: ${(e as Error).message}`);
  }
}

/** Whether `path` exists (file, directory or anything else `stat` finds). */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
