/**
 * kernels.ll's module importing a shared memory, for the fused decoder's arena at batch > 1:
 * the pool's worker instantiates the same module on the same memory and runs the attention of
 * half the sequences (decode.ts). llc writes the memory import unshared (limits flag 0, no
 * maximum) and a shared memory can only be imported where the module says so, so the import's
 * limits are rewritten here: flag 3 (shared, with a maximum), the same minimum, at most
 * MAX_PAGES pages. Nothing else in the module changes; its loads and stores need no atomics.
 */
import { kernelModule } from "./simd.ts";
import { KERNELS_WASM } from "./wasm/kernels_wasm.ts";
import { leb, readLeb } from "./wasm/leb.ts";

/** Largest shared arena in 64 KiB pages (4 GiB, wasm32's whole address space). */
export const MAX_PAGES = 65536;

/** The module bytes with every memory import made shared (maximum MAX_PAGES). */
export function withSharedMemory(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const out: number[] = [...bytes.subarray(0, 8)];
  let at = 8, found = false;
  while (at < bytes.length) {
    const id = bytes[at];
    const [size, start] = readLeb(bytes, at + 1);
    const end = start + size;
    if (id !== 2) {
      out.push(...bytes.subarray(at, end));
      at = end;
      continue;
    }
    const body: number[] = [];
    let [count, i] = readLeb(bytes, start);
    body.push(...leb(count));
    for (; count > 0; count--) {
      const from = i;
      for (let name = 0; name < 2; name++) { // module and field names
        const [len, s] = readLeb(bytes, i);
        i = s + len;
      }
      const kind = bytes[i++];
      body.push(...bytes.subarray(from, i));
      if (kind === 2) { // memory: limits flags, minimum, maximum if flags & 1
        const flags = bytes[i++];
        const [min, afterMin] = readLeb(bytes, i);
        i = afterMin;
        if (flags & 1) i = readLeb(bytes, i)[1];
        body.push(3, ...leb(min), ...leb(MAX_PAGES));
        found = true;
      } else {
        const next = kind === 0
          ? readLeb(bytes, i)[1] // function: type index
          : kind === 1
          ? skipLimits(bytes, i + 1) // table: reference type, limits
          : i + 2; // global: value type, mutability
        body.push(...bytes.subarray(i, next));
        i = next;
      }
    }
    out.push(2, ...leb(body.length), ...body);
    at = end;
  }
  if (!found) throw new Error("withSharedMemory: the module imports no memory");
  return Uint8Array.from(out);
}

function skipLimits(b: Uint8Array, at: number): number {
  const flags = b[at];
  let i = readLeb(b, at + 1)[1];
  if (flags & 1) i = readLeb(b, i)[1];
  return i;
}

let shared: WebAssembly.Module | null | undefined;

/** The shared-memory kernels module of this thread, or null (no wasm SIMD, or no threads). */
export function sharedKernelModule(): WebAssembly.Module | null {
  if (shared === undefined) {
    shared = null;
    if (kernelModule() === null) return null;
    try {
      const bytes = Uint8Array.from(atob(KERNELS_WASM), (c) => c.charCodeAt(0));
      shared = new WebAssembly.Module(withSharedMemory(bytes));
    } catch {
      shared = null; // no shared wasm memory here: arenas stay unshared
    }
  }
  return shared;
}
