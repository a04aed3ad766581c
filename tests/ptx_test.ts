/**
 * The committed PTX: assembles for sm_80 and sm_90 (when ptxas is installed), equals what
 * kernels/build.sh regenerates (when nvcc is installed), is what kernels/ptx.ts embeds,
 * and matches the argument table the CUDA backend packs launches by.
 */
import assert from "node:assert/strict";
import { PTX } from "../kernels/ptx.ts";
import { KERNELS } from "../src/backend/cuda/kernels.ts";

const KERNEL_DIR = new URL("../kernels/", import.meta.url).pathname;

function has(tool: string): boolean {
  try {
    return new Deno.Command(tool, { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

function ptxFiles(): string[] {
  return [...Deno.readDirSync(KERNEL_DIR)]
    .filter((e) => e.name.endsWith(".ptx"))
    .map((e) => e.name)
    .sort();
}

/** "release 13.0, V13.0.88" from `nvcc --version`, or null without nvcc. */
function nvccRelease(): string | null {
  if (!has("nvcc")) return null;
  const out = new TextDecoder().decode(
    new Deno.Command("nvcc", { args: ["--version"], stdout: "piped" }).outputSync().stdout,
  );
  return out.match(/release [\d.]+, V[\d.]+/)?.[0] ?? null;
}

const HAS_PTXAS = has("ptxas");
const NVCC = nvccRelease();
// The PTX header names the nvcc that made it; another nvcc emits other (equally valid) PTX.
const MADE_BY = Object.values(PTX)[0]?.match(/release [\d.]+, V[\d.]+/)?.[0] ?? "";
const CAN_REGENERATE = NVCC !== null && NVCC === MADE_BY;
if (!HAS_PTXAS) console.warn("ptx_test: ptxas not found, skipping the assembly check");
if (!CAN_REGENERATE) {
  console.warn(
    `ptx_test: skipping the regeneration check (nvcc ${NVCC ?? "absent"}, PTX made by ${MADE_BY})`,
  );
}

Deno.test("kernels/*.ptx assembles with ptxas for sm_80 and sm_90", {
  ignore: !HAS_PTXAS,
}, () => {
  const files = ptxFiles();
  assert.ok(files.length > 0, "no kernels/*.ptx");
  for (const f of files) {
    for (const arch of ["sm_80", "sm_90"]) {
      const r = new Deno.Command("ptxas", {
        args: [`-arch=${arch}`, `${KERNEL_DIR}${f}`, "-o", "/dev/null"],
        stdout: "piped",
        stderr: "piped",
      }).outputSync();
      assert.ok(r.success, `ptxas -arch=${arch} ${f}:\n${new TextDecoder().decode(r.stderr)}`);
    }
  }
});

Deno.test("kernels/build.sh regenerates the committed PTX and ptx.ts", {
  ignore: !CAN_REGENERATE,
}, () => {
  const out = Deno.makeTempDirSync({ prefix: "tune_ptx_" });
  try {
    const r = new Deno.Command("bash", {
      args: [`${KERNEL_DIR}build.sh`, out],
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    assert.ok(r.success, `build.sh failed:\n${new TextDecoder().decode(r.stderr)}`);
    for (const f of [...ptxFiles(), "ptx.ts"]) {
      const committed = Deno.readTextFileSync(`${KERNEL_DIR}${f}`);
      const fresh = Deno.readTextFileSync(`${out}/${f}`);
      assert.ok(committed === fresh, `${f} differs from a fresh build: run \`deno task ptx\``);
    }
  } finally {
    Deno.removeSync(out, { recursive: true });
  }
});

Deno.test("PTX embeds every kernels/*.ptx file verbatim", () => {
  const files = ptxFiles();
  assert.deepEqual(Object.keys(PTX).sort(), files.map((f) => f.replace(/\.ptx$/, "")));
  for (const f of files) {
    const name = f.replace(/\.ptx$/, "");
    assert.ok(PTX[name] === Deno.readTextFileSync(`${KERNEL_DIR}${f}`), `${f} != PTX.${name}`);
  }
});

/** Parameter kinds of each `.entry` in a PTX text: u64 -> p, u32/s32 -> i, f32 -> f. */
function entryParams(ptx: string): Map<string, string> {
  const out = new Map<string, string>();
  const re = /\.entry\s+(\w+)\s*\(([^)]*)\)/g;
  for (const m of ptx.matchAll(re)) {
    const kinds = [...m[2].matchAll(/\.param\s+\.(\w+)/g)].map((p) => {
      const t = p[1];
      if (t === "u64" || t === "b64" || t === "s64") return "p";
      if (t === "u32" || t === "s32" || t === "b32") return "i";
      if (t === "f32") return "f";
      throw new Error(`unexpected parameter type .${t} in ${m[1]}`);
    });
    out.set(m[1], kinds.join(""));
  }
  return out;
}

Deno.test("KERNELS argument kinds match the .param lists of the PTX entries", () => {
  const entries = new Map<string, { module: string; kinds: string }>();
  for (const [module, text] of Object.entries(PTX)) {
    for (const [name, kinds] of entryParams(text)) entries.set(name, { module, kinds });
  }
  for (const [name, spec] of Object.entries(KERNELS)) {
    const e = entries.get(name);
    assert.ok(e, `kernel ${name} is not in any PTX module`);
    assert.equal(e.module, spec.module, `${name} lives in ${e.module}`);
    assert.equal(spec.kinds, e.kinds, `${name}: table says ${spec.kinds}, PTX has ${e.kinds}`);
  }
  for (const name of entries.keys()) {
    assert.ok(name in KERNELS, `PTX entry ${name} is missing from KERNELS`);
  }
});

Deno.test("kernels/*.ptx declares PTX ISA 8.0 and target sm_80", () => {
  for (const [name, text] of Object.entries(PTX)) {
    assert.match(text, /^\.version 8\.0$/m, `${name}.ptx .version`);
    assert.match(text, /^\.target sm_80$/m, `${name}.ptx .target`);
  }
});
