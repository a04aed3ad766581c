/** Pick the compute backend for a run: the CPU backend, or the CUDA backend when asked. */
import { TuneError } from "../errors.ts";
import { OPENBLAS_CANDIDATES } from "../../ffi/openblas.ts";
import { CpuBackend } from "./cpu/backend.ts";
import type { Backend, Collectives } from "./ops.ts";

/** Module that exports `createCudaBackend(opts): Backend` (named for error messages). */
const CUDA_BACKEND_MODULE = "src/backend/cuda/backend.ts";

/** Options shared by every backend. */
export interface BackendOptions {
  /** Collectives of a multi-process run; default: single process. */
  collectives?: Collectives;
}

type CudaModule = {
  createCudaBackend?: (opts: BackendOptions) => Backend | Promise<Backend>;
};

/**
 * A backend for `device`. The CUDA backend is imported only when requested, so CPU runs
 * never load the CUDA libraries; if it cannot be loaded a TuneError says so.
 */
export async function createBackend(
  device: "cpu" | "cuda",
  opts: BackendOptions = {},
): Promise<Backend> {
  if (device === "cpu") {
    const cpu = new CpuBackend({ collectives: opts.collectives });
    if (cpu.matmulPath === "ts") noteMissingOpenBlas();
    return cpu;
  }
  if (device !== "cuda") {
    throw new TuneError(`device "${device}" is not supported; use device=cpu or device=cuda`);
  }
  let mod: CudaModule;
  try {
    // A literal specifier, so `deno compile` bundles the CUDA backend; it is still loaded
    // only when device=cuda is asked for.
    mod = await import("./cuda/backend.ts");
  } catch (e) {
    throw new TuneError(
      `the CUDA backend could not be loaded (${(e as Error).message.split("\n")[0]}); ` +
        `use device=cpu`,
    );
  }
  if (typeof mod.createCudaBackend !== "function") {
    throw new TuneError(`${CUDA_BACKEND_MODULE} has no createCudaBackend(); use device=cpu`);
  }
  return await mod.createCudaBackend({ collectives: opts.collectives });
}

let notedMissingOpenBlas = false;

/**
 * Say once per process (on rank 0) that OpenBLAS was not found, unless the TypeScript
 * matrix products were asked for (`TUNE_CPU_MATMUL=ts`): a run without it is several times
 * slower, and nothing else would tell the user why.
 */
function noteMissingOpenBlas(): void {
  const env = (k: string) => {
    try {
      return Deno.env.get(k);
    } catch {
      return undefined;
    }
  };
  if (notedMissingOpenBlas || env("TUNE_CPU_MATMUL") === "ts") return;
  notedMissingOpenBlas = true;
  if ((env("RANK") ?? "0") !== "0") return;
  console.error(
    `tune: note: OpenBLAS not found (tried ${OPENBLAS_CANDIDATES.join(", ")}; ` +
      "TUNE_OPENBLAS_PATH names another), so matrix products run in TypeScript, about 3-10x " +
      "slower. Install it: Debian/Ubuntu: apt-get install libopenblas0-pthread; " +
      "Fedora: dnf install openblas-threads; macOS: brew install openblas",
  );
}
