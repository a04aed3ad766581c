/**
 * Where the NVIDIA libraries are, and opening them.
 *
 * Search order for each library:
 * 1. an environment override (TUNE_LIBCUDA, TUNE_LIBCUBLASLT, TUNE_LIBNCCL): a file path;
 * 2. the soname through the system loader (LD_LIBRARY_PATH, ld.so.cache);
 * 3. the usual install places: /usr/local/cuda*\/lib64 (and targets/x86_64-linux/lib), and the
 *    `nvidia/` folder of every Python site-packages we can find (pip wheels beside PyTorch).
 *    The wheel layout differs between CUDA 12 (nvidia/cublas/lib/libcublasLt.so.12) and
 *    CUDA 13 (nvidia/cu13/lib/libcublasLt.so.13), so the folder is searched, not guessed.
 *
 * Deno 2.9.6 hands a path straight to dlopen(3): /proc/self/maps shows the mapping on the
 * original file (checked by hand with libopenblas), so opening a wheel library by its full
 * path costs nothing extra and no LD_LIBRARY_PATH re-exec is needed. (LD_LIBRARY_PATH set
 * from inside the process would not be seen by the loader anyway; it is read at start-up.)
 */

import { TuneError } from "./errors.ts";

/** How to find one library. */
export interface LibrarySpec {
  /** Short name used in messages, e.g. "libcuda.so.1". */
  readonly display: string;
  /** Environment variable holding an explicit path. */
  readonly envVar: string;
  /** Sonames tried through the system loader, most wanted first. */
  readonly sonames: readonly string[];
  /** File names accepted when searching folders (e.g. /^libcublasLt\.so(\.\d+)*$/). */
  readonly filePattern: RegExp;
  /** The end of the one-line error: what provides it and how to fix. */
  readonly hint: string;
}

/** The CUDA driver library. */
export const LIBCUDA: LibrarySpec = {
  display: "libcuda.so.1",
  envVar: "TUNE_LIBCUDA",
  sonames: ["libcuda.so.1", "libcuda.so"],
  filePattern: /^libcuda\.so(\.1)?$/,
  hint: "device=cuda needs the NVIDIA driver; set TUNE_LIBCUDA or use device=cpu",
};

/** cuBLASLt (CUDA 12 or 13). */
export const LIBCUBLASLT: LibrarySpec = {
  display: "libcublasLt.so",
  envVar: "TUNE_LIBCUBLASLT",
  sonames: ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"],
  filePattern: /^libcublasLt\.so(\.\d+)*$/,
  hint:
    "device=cuda needs cuBLASLt (CUDA toolkit or the nvidia-cublas pip wheel); set TUNE_LIBCUBLASLT",
};

/** NCCL 2. */
export const LIBNCCL: LibrarySpec = {
  display: "libnccl.so.2",
  envVar: "TUNE_LIBNCCL",
  sonames: ["libnccl.so.2", "libnccl.so"],
  filePattern: /^libnccl\.so(\.\d+)*$/,
  hint: "multi-GPU runs need NCCL (the nvidia-nccl pip wheel); set TUNE_LIBNCCL",
};

function listDir(dir: string): Deno.DirEntry[] {
  try {
    return [...Deno.readDirSync(dir)];
  } catch {
    return [];
  }
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** Python site-packages folders on this machine (system, /usr/local, pyenv, conda, venv, user). */
export function sitePackagesDirs(): string[] {
  const roots: string[] = ["/usr/lib", "/usr/local/lib", "/opt/conda/lib"];
  const home = env("HOME");
  if (home) {
    roots.push(`${home}/.local/lib`);
    for (const v of listDir(`${home}/.pyenv/versions`)) {
      roots.push(`${home}/.pyenv/versions/${v.name}/lib`);
    }
    for (const c of ["miniconda3", "anaconda3", "miniforge3", "mambaforge"]) {
      roots.push(`${home}/${c}/lib`);
    }
  }
  for (const v of ["VIRTUAL_ENV", "CONDA_PREFIX"]) {
    const p = env(v);
    if (p) roots.push(`${p}/lib`);
  }
  for (const v of listDir("/opt")) {
    if (!v.isDirectory) continue;
    for (const sub of ["lib", ".venv/lib", "venv/lib"]) roots.push(`/opt/${v.name}/${sub}`);
  }
  // The Python environments whose bin/ is on PATH (a venv holding torch, for one).
  for (const dir of (env("PATH") ?? "").split(":")) {
    if (dir.endsWith("/bin")) roots.push(`${dir.slice(0, -4)}/lib`);
  }
  const out: string[] = [];
  for (const root of new Set(roots)) {
    for (const e of listDir(root)) {
      if (!e.name.startsWith("python3")) continue;
      for (const sub of ["site-packages", "dist-packages"]) {
        const d = `${root}/${e.name}/${sub}`;
        if (!out.includes(d) && listDir(d).length > 0) out.push(d);
      }
    }
  }
  return out;
}

/** Files matching `pattern` under `dir`, at most `depth` folders down. */
function findFiles(dir: string, pattern: RegExp, depth: number, out: string[]): void {
  for (const e of listDir(dir)) {
    const p = `${dir}/${e.name}`;
    if ((e.isFile || e.isSymlink) && pattern.test(e.name)) out.push(p);
    else if (e.isDirectory && depth > 0) findFiles(p, pattern, depth - 1, out);
  }
}

/** Higher numbered sonames first (libcublasLt.so.13 before .so.12), real files before links. */
function byVersionDesc(a: string, b: string): number {
  const va = a.match(/\.so\.(\d+)/)?.[1] ?? "0";
  const vb = b.match(/\.so\.(\d+)/)?.[1] ?? "0";
  return Number(vb) - Number(va) || a.localeCompare(b);
}

/** Candidate paths from the usual install places (step 3), best first. */
export function installedCandidates(spec: LibrarySpec): string[] {
  const found: string[] = [];
  const cudaDirs = listDir("/usr/local")
    .filter((e) => e.name.startsWith("cuda"))
    .map((e) => `/usr/local/${e.name}`);
  for (const d of cudaDirs) {
    for (const sub of ["lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"]) {
      findFiles(`${d}/${sub}`, spec.filePattern, 0, found);
    }
  }
  for (const sp of sitePackagesDirs()) findFiles(`${sp}/nvidia`, spec.filePattern, 3, found);
  const systemDirs = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib/wsl/lib",
    "/usr/local/nvidia/lib64", // driver mounted into containers
    "/usr/local/nvidia/lib",
  ];
  for (const d of systemDirs) {
    findFiles(d, spec.filePattern, 0, found);
  }
  return [...new Set(found)].sort(byVersionDesc);
}

/**
 * Open `spec` with `symbols`, trying the override, the sonames, then installed places.
 * Throws a one-line TuneError naming the library when nothing opens.
 */
export function openLibrary<S extends Deno.ForeignLibraryInterface>(
  spec: LibrarySpec,
  symbols: S,
): { lib: Deno.DynamicLibrary<S>; path: string } {
  const override = env(spec.envVar);
  if (override) {
    try {
      return { lib: Deno.dlopen(override, symbols), path: override };
    } catch (e) {
      throw new TuneError(
        `${spec.envVar}=${override} could not be opened (${
          firstLine(e)
        }); fix the path or unset it`,
      );
    }
  }
  const errors: string[] = [];
  for (const name of [...spec.sonames, ...installedCandidates(spec)]) {
    try {
      return { lib: Deno.dlopen(name, symbols), path: name };
    } catch (e) {
      const msg = firstLine(e);
      // A library that exists but lacks a symbol is worth reporting; "not found" is not.
      if (!/No such file|cannot open shared object/i.test(msg)) errors.push(`${name}: ${msg}`);
    }
  }
  const extra = errors.length > 0 ? ` (${errors[0]})` : "";
  throw new TuneError(`${spec.display} not found${extra}: ${spec.hint}`);
}

function firstLine(e: unknown): string {
  return String(e instanceof Error ? e.message : e).split("\n")[0];
}
