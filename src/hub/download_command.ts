/**
 * `tune download <repo_id> --output-dir DIR [--hf-token TOKEN] [--revision REV]
 * [--ignore-patterns GLOB ...]`: torchtune's download command.
 */
import { TuneError } from "../errors.ts";
import { downloadRepo } from "./models.ts";
import { resolveToken } from "./settings.ts";

/** Usage text of `tune download`. */
export const DOWNLOAD_USAGE = `usage: tune download <repo_id> --output-dir DIR [--hf-token TOKEN]
                     [--revision REV] [--ignore-patterns GLOB ...]
  Downloads a model repository from the Hugging Face Hub (HF_ENDPOINT overrides the hub URL,
  HF_TOKEN supplies a token). Interrupted downloads resume when run again.`;

/** Parsed `tune download` arguments. */
export interface DownloadArgs {
  repoId: string;
  outputDir: string;
  hfToken: string | null;
  revision: string;
  ignorePatterns: string[];
}

/** Parse `tune download` arguments (without "download"). */
export function parseDownloadArgs(args: readonly string[]): DownloadArgs | "help" {
  let repoId: string | null = null;
  let outputDir: string | null = null;
  let hfToken: string | null = null;
  let revision = "main";
  const ignorePatterns: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const [flag, inline] = a.startsWith("--") && a.includes("=") ? a.split(/=(.*)/s, 2) : [a, null];
    const value = () => {
      if (inline !== null) return inline;
      const v = args[++i];
      if (v === undefined || v.startsWith("--")) {
        throw new TuneError(`tune download: ${flag} needs a value`);
      }
      return v;
    };
    switch (flag) {
      case "-h":
      case "--help":
        return "help";
      case "--output-dir":
      case "--output_dir":
        outputDir = value();
        break;
      case "--hf-token":
      case "--hf_token":
        hfToken = value();
        break;
      case "--revision":
        revision = value();
        break;
      case "--ignore-patterns":
      case "--ignore_patterns":
        // One value, patterns separated by spaces or commas (repeat the flag for more).
        ignorePatterns.push(...value().split(/[\s,]+/).filter(Boolean));
        break;
      default:
        if (a.startsWith("-")) {
          throw new TuneError(`tune download: unknown option ${a}; see tune download --help`);
        }
        if (repoId !== null) {
          throw new TuneError(`tune download: one repository at a time (got ${repoId} and ${a})`);
        }
        repoId = a;
    }
  }
  if (!repoId) {
    throw new TuneError(
      `tune download: missing <repo_id>, e.g. tune download meta-llama/Llama-3.2-1B --output-dir /tmp/llama`,
    );
  }
  if (!outputDir) throw new TuneError(`tune download: missing --output-dir DIR`);
  return { repoId, outputDir, hfToken, revision, ignorePatterns };
}

/**
 * Run `tune download` with `args` (the words after "download"). Returns the exit code;
 * bad input throws TuneError (the CLI prints it as one line).
 */
export async function downloadCommand(args: readonly string[]): Promise<number> {
  const parsed = parseDownloadArgs(args);
  if (parsed === "help") {
    console.log(DOWNLOAD_USAGE);
    return 0;
  }
  const files = await downloadRepo(parsed.repoId, {
    outputDir: parsed.outputDir,
    token: resolveToken(parsed.hfToken),
    revision: parsed.revision,
    ignorePatterns: parsed.ignorePatterns,
  });
  console.log(`Downloaded ${files.length} files of ${parsed.repoId} to ${parsed.outputDir}`);
  return 0;
}
