/**
 * `tune export`: a checkpoint folder to GGUF, and a GGUF back to a Hugging Face folder.
 *
 *   tune export gguf --checkpoint <folder> --output <file.gguf> [--dtype f32|f16|bf16|q8_0]
 *                    [--tokenizer <file>]
 *   tune export hf --gguf <file.gguf> --output <folder>
 */
import { basename, join } from "node:path";
import { saveHfCheckpoint } from "../checkpoint/hf_checkpoint.ts";
import { TuneError } from "../errors.ts";
import { exportGguf, type GgufDtype } from "./gguf_export.ts";
import { importGguf } from "./gguf_import.ts";
import { tokenizerMetadata } from "./gguf_tokenizer.ts";
import { loadModelFolder } from "./model_folder.ts";
import { writeGgufTokenizer } from "./gguf_tokenizer_files.ts";

/** Usage of `tune export`. */
export const EXPORT_USAGE = `usage:
  tune export gguf --checkpoint <folder> --output <file.gguf> [--dtype f32|f16|bf16|q8_0]
                   [--tokenizer <file>]
      A model folder (Hugging Face, Meta or llama2.c; e.g. an epoch_N folder of a run) as one
      GGUF file for llama.cpp, Ollama and LM Studio. --dtype defaults to the weights' dtype;
      the tokenizer comes from the folder (tokenizer.json, tokenizer.model or tokenizer.bin).
  tune export hf --gguf <file.gguf> --output <folder>
      A GGUF file (f32, f16, bf16 or q8_0 tensors) as a Hugging Face folder tune fine-tunes
      (config.json, model.safetensors, and the tokenizer rebuilt from the GGUF metadata).`;

const DTYPES: GgufDtype[] = ["f32", "f16", "bf16", "q8_0"];

function parseFlags(args: readonly string[], allowed: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = args[i].includes("=") ? args[i].split(/=(.*)/s, 2) : [args[i], null];
    if (!allowed.includes(flag)) {
      throw new TuneError(
        `export: unknown argument '${args[i]}'; expected ${allowed.join(", ")}`,
      );
    }
    const v = inline ?? args[++i];
    if (v === undefined || v.startsWith("--")) {
      throw new TuneError(`export: ${flag} needs a value`);
    }
    out.set(flag, v);
  }
  return out;
}

function need(flags: Map<string, string>, flag: string, what: string): string {
  const v = flags.get(flag);
  if (!v) throw new TuneError(`export ${what} needs ${flag}; see tune export --help`);
  return v;
}

/** Run `tune export` on its arguments (after "export"); bad input is a TuneError. */
export function exportCommand(args: readonly string[]): void {
  const [what, ...rest] = args;
  if (what === undefined || what === "--help" || what === "-h" || rest.includes("--help")) {
    console.log(EXPORT_USAGE);
    return;
  }
  if (what === "gguf") {
    const f = parseFlags(rest, ["--checkpoint", "--output", "--dtype", "--tokenizer"]);
    const dir = need(f, "--checkpoint", "gguf");
    const output = need(f, "--output", "gguf");
    const dtypeArg = f.get("--dtype");
    if (dtypeArg !== undefined && !DTYPES.includes(dtypeArg as GgufDtype)) {
      throw new TuneError(
        `export gguf: --dtype ${dtypeArg} is not one of ${DTYPES.join(", ")}`,
      );
    }
    const m = loadModelFolder(dir);
    const first = [...m.stateDict.values()].find((t) => t.shape.length === 2);
    const dtype = (dtypeArg as GgufDtype | undefined) ?? first?.sourceDtype ?? "f32";
    const tokenizer = tokenizerMetadata(
      dir,
      m.config.vocabSize,
      m.family.bpePre,
      f.get("--tokenizer"),
    );
    exportGguf(output, m.stateDict, m.config, {
      family: m.family,
      dtype,
      tokenizer,
      name: basename(dir.replace(/\/+$/, "")),
    });
    console.error(`wrote ${output} (${m.family.arch}, ${dtype}, ${m.stateDict.size} tensors)`);
    return;
  }
  if (what === "hf") {
    const f = parseFlags(rest, ["--gguf", "--output"]);
    const path = need(f, "--gguf", "hf");
    const output = need(f, "--output", "hf");
    const m = importGguf(path);
    saveHfCheckpoint(output, m.stateDict, m.config, {
      configJson: { architectures: [m.family.hfArchitectures[0]] },
    });
    const files = writeGgufTokenizer(m.header.metadata, output);
    console.error(`wrote ${join(output, "model.safetensors")}, config.json, ${files.join(", ")}`);
    return;
  }
  throw new TuneError(
    `export: unknown target '${what}'; use 'gguf' or 'hf' (tune export --help)`,
  );
}
