/**
 * Imports point one way. The rule, top to bottom (a file may import its own folder and any
 * layer below its own, never one above):
 *
 *   cli.ts
 *   recipes/
 *   src/components.ts (every area's registrations), src/demo/
 *   src/training/                      the loops' building blocks
 *   src/rlhf/, src/eval/, src/generation/   loss heads, evaluation, decoding over a model
 *   src/checkpoint/                    file formats <-> named host tensors of a model
 *   src/models/                        model families, builders, LlamaModel
 *   src/optim/                         AdamW, clipping, schedules over the flat parameters
 *   src/modules/                       layers (linear, LoRA, attention, ...) over the op interface
 *   src/params/                        flat parameter store, layout table, host tensors
 *   src/distributed/                   process group, TCP collectives, launcher
 *   src/data/, src/tokenizers/, src/hub/, src/config/
 *   src/backend/                       the op interface, CPU and CUDA backends
 *   src/errors.ts
 *   ffi/                               Deno.dlopen bindings; imports nothing above it
 *   kernels/                           generated PTX
 *
 * The test parses the import and export-from statements (static and `import("...")`) of every
 * .ts file under src/, ffi/ and recipes/ and of cli.ts, maps each file to its layer and fails
 * on an edge that runs back up, naming the file, the import and both layers. A folder that
 * is not in the table fails too: give it a place in LAYERS.
 */
import { ok } from "node:assert";
import { dirname, join, normalize, relative } from "node:path";

const ROOT = normalize(join(dirname(new URL(import.meta.url).pathname), ".."));

/** Layers from the top; a string names a folder (ending in "/") or a file. */
const LAYERS: readonly (readonly string[])[] = [
  ["cli.ts"],
  ["recipes/"],
  ["src/components.ts", "src/demo/"],
  ["src/training/"],
  ["src/rlhf/", "src/eval/"],
  ["src/generation/"],
  ["src/export/"],
  ["src/checkpoint/"],
  ["src/models/"],
  ["src/optim/"],
  ["src/modules/"],
  ["src/quant/"],
  ["src/params/"],
  ["src/distributed/"],
  ["src/data/"],
  ["src/tokenizers/"],
  ["src/hub/"],
  ["src/config/"],
  ["src/backend/"],
  ["src/errors.ts"],
  ["ffi/"],
  ["kernels/"],
];

/**
 * Known back-edges, each with the reason it is still here. Remove an entry when its edge is
 * gone (the test fails on an entry that matches nothing, so the list cannot go stale).
 */
const ALLOWED: readonly { from: string; to: string; why: string }[] = [
  {
    from: "src/tokenizers/components.ts",
    to: "src/data/prompt_template.ts",
    why: "tokenizer builders take torchtune's prompt_template key; the tokenizer helper " +
      "is reshaping src/data/chat_format and src/tokenizers",
  },
];

/** The layer index of a repo-relative path (0 is the top), and the entry that matched. */
function layerOf(path: string): { index: number; entry: string } | null {
  for (let i = 0; i < LAYERS.length; i++) {
    for (const entry of LAYERS[i]) {
      if (entry.endsWith("/") ? path.startsWith(entry) : path === entry) return { index: i, entry };
    }
  }
  return null;
}

/** The folder (or top-level file) a path belongs to, for "same place" edges. */
function placeOf(path: string): string {
  const parts = path.split("/");
  if (parts[0] === "src") return parts.length > 2 ? `src/${parts[1]}/` : path;
  return parts.length > 1 ? `${parts[0]}/` : path;
}

/** Source text with comments blanked out (strings and template literals kept intact). */
function stripComments(src: string): string {
  let out = "";
  let i = 0;
  while (i < src.length) {
    const c = src[i], n = src[i + 1];
    if (c === "/" && n === "/") {
      while (i < src.length && src[i] !== "\n") i++;
    } else if (c === "/" && n === "*") {
      const end = src.indexOf("*/", i + 2);
      i = end < 0 ? src.length : end + 2;
      out += " ";
    } else if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < src.length && src[j] !== c) j += src[j] === "\\" ? 2 : 1;
      out += src.slice(i, j + 1);
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

const IMPORT = new RegExp(
  [
    String.raw`\b(?:import|export)\s+(?:type\s+)?[\w*{}\s,$]*?\bfrom\s*["']([^"']+)["']`,
    String.raw`\bimport\s*\(\s*["']([^"']+)["']\s*\)`,
    String.raw`\bimport\s+["']([^"']+)["']`,
  ].join("|"),
  "g",
);

/** Relative import specifiers of a source file. */
export function importsOf(src: string): string[] {
  const out: string[] = [];
  for (const m of stripComments(src).matchAll(IMPORT)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (spec.startsWith(".")) out.push(spec);
  }
  return out;
}

function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(join(ROOT, dir))) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...tsFiles(p));
    else if (e.isFile && e.name.endsWith(".ts")) out.push(p);
  }
  return out;
}

Deno.test("importsOf() reads static, type, re-export and dynamic imports and skips comments", () => {
  const src = `import { a } from "./a.ts";
import type { B } from '../b.ts';
export { c } from "./c.ts";
export * from "./d.ts";
import "./e.ts";
const m = await import("./f.ts");
// import { g } from "./g.ts";
/* import { h } from "./h.ts"; */
import { yaml } from "yaml";
const url = "https://x/y"; import { i } from "./i.ts";`;
  const got = importsOf(src);
  const want = ["./a.ts", "../b.ts", "./c.ts", "./d.ts", "./e.ts", "./f.ts", "./i.ts"];
  ok(JSON.stringify(got) === JSON.stringify(want), JSON.stringify(got));
});

Deno.test("imports point down: cli -> recipes -> src (training -> models -> modules -> backend) -> ffi", () => {
  const files = ["cli.ts", ...tsFiles("src"), ...tsFiles("ffi"), ...tsFiles("recipes")];
  ok(files.length > 100, `only ${files.length} files found under ${ROOT}`);
  const bad: string[] = [];
  const used = new Set<string>();
  let edges = 0;
  for (const file of files) {
    const from = layerOf(file);
    if (!from) {
      bad.push(`${file}: its folder has no layer; give it a place in LAYERS`);
      continue;
    }
    for (const spec of importsOf(Deno.readTextFileSync(join(ROOT, file)))) {
      const target = relative(ROOT, normalize(join(ROOT, dirname(file), spec)));
      edges++;
      if (placeOf(target) === placeOf(file)) continue;
      const to = layerOf(target);
      if (!to) {
        bad.push(`${file} imports ${spec}: ${target} has no layer; give it a place in LAYERS`);
        continue;
      }
      if (to.index > from.index) continue;
      const allowed = ALLOWED.find((a) => a.from === file && a.to === target);
      if (allowed) {
        used.add(`${allowed.from} -> ${allowed.to}`);
        continue;
      }
      bad.push(`${file} (${from.entry}) imports ${spec}, which is ${to.entry}: up or sideways`);
    }
  }
  for (const a of ALLOWED) {
    if (!used.has(`${a.from} -> ${a.to}`)) {
      bad.push(`ALLOWED lists ${a.from} -> ${a.to}, which is gone: remove the entry`);
    }
  }
  ok(edges > 500, `only ${edges} imports found`);
  ok(bad.length === 0, `${bad.length} imports run back up:\n  ${bad.join("\n  ")}`);
});
