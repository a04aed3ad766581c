/**
 * The committed PTX, stored once in the generated kernels/ptx.ts: it holds one module per
 * kernels/*.cu, assembles for sm_80 and sm_90 (when ptxas is installed), is up to date with
 * the .cu sources (kernels/build.sh regenerates it byte for byte when the same nvcc is
 * installed), and matches the argument table the CUDA backend packs launches by.
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

/** The kernel sources, as module names ("attention" for kernels/attention.cu). */
function cuNames(): string[] {
  return [...Deno.readDirSync(KERNEL_DIR)]
    .filter((e) => e.name.endsWith(".cu"))
    .map((e) => e.name.replace(/\.cu$/, ""))
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

Deno.test("PTX (kernels/ptx.ts) has one module per kernels/*.cu", () => {
  assert.deepEqual(Object.keys(PTX).sort(), cuNames());
});

Deno.test("every PTX module assembles with ptxas for sm_80 and sm_90", {
  ignore: !HAS_PTXAS,
}, () => {
  const dir = Deno.makeTempDirSync({ prefix: "tune_ptxas_" });
  try {
    for (const [name, text] of Object.entries(PTX)) {
      const file = `${dir}/${name}.ptx`;
      Deno.writeTextFileSync(file, text);
      for (const arch of ["sm_80", "sm_90"]) {
        const r = new Deno.Command("ptxas", {
          args: [`-arch=${arch}`, file, "-o", "/dev/null"],
          stdout: "piped",
          stderr: "piped",
        }).outputSync();
        assert.ok(r.success, `ptxas -arch=${arch} ${name}:\n${new TextDecoder().decode(r.stderr)}`);
      }
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("kernels/ptx.ts is up to date: kernels/build.sh regenerates it byte for byte", {
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
    const committed = Deno.readTextFileSync(`${KERNEL_DIR}ptx.ts`);
    const fresh = Deno.readTextFileSync(`${out}/ptx.ts`);
    assert.ok(
      committed === fresh,
      "kernels/ptx.ts differs from a fresh build: run `deno task ptx`",
    );
  } finally {
    Deno.removeSync(out, { recursive: true });
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

Deno.test("every PTX module declares PTX ISA 8.0 and target sm_80", () => {
  for (const [name, text] of Object.entries(PTX)) {
    assert.match(text, /^\.version 8\.0$/m, `${name}.ptx .version`);
    assert.match(text, /^\.target sm_80$/m, `${name}.ptx .target`);
  }
});
