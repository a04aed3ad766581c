/**
 * Download a model repository from the Hugging Face Hub (`tune download`), speaking the
 * hub's public HTTP protocol as huggingface_hub does:
 *   1. `GET {endpoint}/api/models/{repo}` (`/revision/{rev}` for other revisions, `?blobs=true`
 *      for sizes) lists the files (`siblings[].rfilename`, `.size`).
 *   2. `GET {endpoint}/{repo}/resolve/{revision}/{file}` downloads each file, with
 *      `Authorization: Bearer <token>` when a token is given (--hf-token, HF_TOKEN).
 * A file streams into `<file>.incomplete`; an interrupted download resumes from its length
 * with a `Range: bytes=N-` header, and the finished file is renamed into place. Files
 * already present with the listed size are skipped. The endpoint and token come from
 * `settings.ts` (HF_ENDPOINT, HF_TOKEN) unless given.
 */
import { dirname, join, normalize } from "node:path";
import { TuneError } from "../errors.ts";
import { type HubFailureText, hubRequest } from "./http.ts";
import { defaultEndpoint } from "./settings.ts";

/** Options of `downloadRepo`. */
export interface DownloadOptions {
  outputDir: string;
  /** Access token, or null for public repos. */
  token: string | null;
  /** Hub URL without trailing slash (default HF_ENDPOINT or https://huggingface.co). */
  endpoint?: string;
  revision?: string;
  /** Glob patterns (`*`, `?`, `**`) of repository files to skip. */
  ignorePatterns?: string[];
  /** Where progress goes (default stderr); null for silence. */
  progress?: ((line: string, done: boolean) => void) | null;
}

/** One file of a repository listing. */
export interface RepoFile {
  path: string;
  size: number | null;
}

/** How `tune download` explains a failed request for `what` (listing or downloading). */
function failureText(repo: string, what: string, token: string | null): HubFailureText {
  return {
    unreachable: (origin, why) =>
      `cannot reach ${origin} for ${what}: ${why}; check the network or set HF_ENDPOINT`,
    denied: (status) =>
      `${what}: access denied (HTTP ${status}) to ${repo}; ` +
      (token
        ? `check that your token is valid and that you accepted the model's license on its hub page`
        : `it is gated or private: pass --hf-token or set HF_TOKEN`),
    notFound: () =>
      `${what}: not found (HTTP 404); check the repository id ${repo} and the revision`,
    other: (status) => `${what}: the hub answered HTTP ${status}; try again later`,
  };
}

/** The files of a model repository. */
export async function listRepoFiles(
  repo: string,
  options: { token: string | null; endpoint?: string; revision?: string },
): Promise<RepoFile[]> {
  const endpoint = options.endpoint ?? defaultEndpoint();
  const rev = options.revision ?? "main";
  const url = `${endpoint}/api/models/${repo}` +
    (rev === "main" ? "" : `/revision/${encodeURIComponent(rev)}`) + "?blobs=true";
  const res = await hubRequest(
    url,
    { token: options.token },
    failureText(repo, `listing ${repo}`, options.token),
  );
  const json = await res.json() as { siblings?: { rfilename: string; size?: number }[] };
  if (!Array.isArray(json.siblings)) {
    throw new TuneError(`listing ${repo}: the hub's answer has no file list (siblings)`);
  }
  return json.siblings.map((s) => {
    const path = s.rfilename;
    const norm = normalize(path);
    if (norm.startsWith("..") || norm.startsWith("/")) {
      throw new TuneError(`listing ${repo}: refusing file name ${path} outside the output dir`);
    }
    return { path, size: typeof s.size === "number" ? s.size : null };
  });
}

/** Glob (`*` within a path segment, `**` across, `?`) to RegExp. */
export function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*" && glob[i + 1] === "*") {
      re += ".*";
      i++;
      if (glob[i + 1] === "/") i++;
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

function fmtBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

function defaultProgress(): (line: string, done: boolean) => void {
  const tty = Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  return (line, done) => {
    if (tty) Deno.stderr.writeSync(enc.encode(`\r\x1b[2K${line}${done ? "\n" : ""}`));
    else if (done) Deno.stderr.writeSync(enc.encode(`${line}\n`));
  };
}

function bar(file: string, got: number, total: number | null): string {
  if (!total) return `${file} ${fmtBytes(got)}`;
  const frac = Math.min(1, got / total);
  const width = 24;
  const fill = Math.round(frac * width);
  return `${file} [${"#".repeat(fill)}${"-".repeat(width - fill)}] ${
    (frac * 100).toFixed(0).padStart(3)
  }% ${fmtBytes(got)}/${fmtBytes(total)}`;
}

function sizeOf(path: string): number | null {
  try {
    return Deno.statSync(path).size;
  } catch {
    return null;
  }
}

/**
 * Download one file to `dest`, resuming `dest.incomplete` when present. Returns the bytes
 * fetched over the network.
 */
export async function downloadFile(
  url: string,
  dest: string,
  options: {
    token: string | null;
    repo: string;
    size: number | null;
    progress: ((line: string, done: boolean) => void) | null;
    label: string;
  },
): Promise<number> {
  const part = `${dest}.incomplete`;
  Deno.mkdirSync(dirname(dest), { recursive: true });
  let have = sizeOf(part) ?? 0;
  if (options.size !== null && have > options.size) {
    Deno.removeSync(part); // longer than the file: not ours, start again
    have = 0;
  }
  const extra: Record<string, string> = have > 0 ? { range: `bytes=${have}-` } : {};
  const res = await hubRequest(
    url,
    { token: options.token, headers: extra, accept: have > 0 ? [416] : [] },
    failureText(options.repo, `downloading ${options.label}`, options.token),
  );
  if (res.status === 416 && have > 0 && (options.size === null || have === options.size)) {
    await res.body?.cancel();
    Deno.renameSync(part, dest); // already complete
    return 0;
  }
  if (res.status === 416) {
    await res.body?.cancel();
    throw new TuneError(
      `downloading ${options.label}: the hub refused to resume at byte ${have} (HTTP 416); ` +
        `delete ${part} and run the same command again`,
    );
  }
  const resumed = res.status === 206;
  if (!resumed) have = 0; // the server ignored Range: start over
  const lengthHeader = res.headers.get("content-length");
  const expected = options.size ?? (lengthHeader !== null ? have + Number(lengthHeader) : null);
  const file = Deno.openSync(part, {
    write: true,
    create: true,
    append: resumed,
    truncate: !resumed,
  });
  let got = have;
  let fetched = 0;
  let lastShown = 0;
  try {
    const reader = res.body!.getReader();
    while (true) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw new TuneError(
          `download of ${options.label} was interrupted after ${got} bytes ` +
            `(${(e as Error).message}); run the same command again to resume`,
        );
      }
      if (chunk.done) break;
      let off = 0;
      while (off < chunk.value.length) off += file.writeSync(chunk.value.subarray(off));
      got += chunk.value.length;
      fetched += chunk.value.length;
      if (options.progress && got - lastShown > 1 << 20) {
        options.progress(bar(options.label, got, expected), false);
        lastShown = got;
      }
    }
    file.syncSync();
  } finally {
    file.close();
  }
  if (expected !== null && got !== expected) {
    throw new TuneError(
      `download of ${options.label} stopped at ${got} of ${expected} bytes; ` +
        `run the same command again to resume`,
    );
  }
  Deno.renameSync(part, dest);
  options.progress?.(bar(options.label, got, expected ?? got), true);
  return fetched;
}

/** Download every file of `repo` (minus ignored ones) into `options.outputDir`. */
export async function downloadRepo(repo: string, options: DownloadOptions): Promise<string[]> {
  if (!/^[\w.-]+(\/[\w.-]+)?$/.test(repo)) {
    throw new TuneError(`repository id ${repo} is not of the form <owner>/<name>`);
  }
  const endpoint = (options.endpoint ?? defaultEndpoint()).replace(/\/+$/, "");
  const revision = options.revision ?? "main";
  const ignore = (options.ignorePatterns ?? []).map(globToRegExp);
  const progress = options.progress === undefined ? defaultProgress() : options.progress;
  const files = await listRepoFiles(repo, { token: options.token, endpoint, revision });
  const written: string[] = [];
  for (const f of files) {
    if (ignore.some((re) => re.test(f.path))) continue;
    const dest = join(options.outputDir, f.path);
    written.push(dest);
    if (f.size !== null && sizeOf(dest) === f.size) continue; // already downloaded
    const url = `${endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/` +
      f.path.split("/").map(encodeURIComponent).join("/");
    await downloadFile(url, dest, {
      token: options.token,
      repo,
      size: f.size,
      progress,
      label: f.path,
    });
  }
  return written;
}
