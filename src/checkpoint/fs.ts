/** Small file-system helpers shared by the checkpoint and data loaders. */

/** Whether `path` exists (file, directory or anything else `stat` finds). */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
