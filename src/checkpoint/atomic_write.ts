/**
 * Crash-safe file writes: every checkpoint file is written under a temporary name in the
 * same directory and renamed over the target only once it is complete, so a crash never
 * leaves a half-written file where a good one was.
 */
import { dirname } from "node:path";

let syncMs = 0;

/** Seconds this process has spent in the fsync of `atomicWriteWith` (for benchmarks). */
export function fsyncSeconds(): number {
  return syncMs / 1000;
}

/** Write `bytes` to `path` through a temporary file and an atomic rename. */
export function atomicWrite(path: string, bytes: Uint8Array | string): void {
  atomicWriteWith(path, (file) => {
    const data = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
    writeAll(file, data);
  });
}

/**
 * Open a temporary file beside `path`, let `write` stream into it, fsync, then rename it
 * to `path`. On any error the temporary file is removed and the old `path` is untouched.
 */
export function atomicWriteWith(path: string, write: (file: Deno.FsFile) => void): void {
  Deno.mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const file = Deno.openSync(tmp, { write: true, create: true, truncate: true });
  try {
    write(file);
    const t0 = performance.now();
    file.syncSync();
    syncMs += performance.now() - t0;
    file.close();
  } catch (e) {
    try {
      file.close();
    } catch { /* already closed */ }
    try {
      Deno.removeSync(tmp);
    } catch { /* never created */ }
    throw e;
  }
  Deno.renameSync(tmp, path);
}

/** Write every byte of `data` (writeSync may write fewer than asked). */
export function writeAll(file: Deno.FsFile, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += file.writeSync(data.subarray(off));
}

/** Read exactly `length` bytes at `position`; returns fewer only at end of file. */
export function readAt(file: Deno.FsFile, position: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  file.seekSync(position, Deno.SeekMode.Start);
  let off = 0;
  while (off < length) {
    const n = file.readSync(out.subarray(off));
    if (n === null || n === 0) return out.subarray(0, off);
    off += n;
  }
  return out;
}
