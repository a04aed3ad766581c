/**
 * Test helper: the fake driver of tests/cuda_fake_driver.c with kernels/*.cu compiled by g++
 * against the CPU emulation of tests/cuda_emulator.h, so cuLaunchKernel really runs the
 * kernels (tests/cuda_emulator_test.ts, tests/cuda_offload_test.ts).
 */
import assert from "node:assert/strict";
import { KERNELS } from "../src/backend/cuda/kernels.ts";

const TESTS = new URL("./", import.meta.url).pathname;
const KERNEL_DIR = new URL("../kernels/", import.meta.url).pathname;

/** g++ with C++20's <barrier> (GCC 11 or newer). */
export function hasGpp(): boolean {
  const probe = Deno.makeTempFileSync({ suffix: ".cpp" });
  try {
    Deno.writeTextFileSync(probe, "#include <barrier>\nint main() { return 0; }\n");
    return new Deno.Command("g++", {
      args: ["-std=c++20", "-fsyntax-only", probe],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  } finally {
    Deno.removeSync(probe);
  }
}

/** C++ trampolines: unpack a launch's argument buffer by the KERNELS table and call. */
function trampolines(): string {
  const ctype = { p: "void*", i: "int", f: "float" } as const;
  const lines = ["#include <cstring>", "#include <cstddef>"];
  const entries: string[] = [];
  for (const [name, spec] of Object.entries(KERNELS)) {
    const kinds = [...spec.kinds] as ("p" | "i" | "f")[];
    lines.push(`extern "C" void ${name}(${kinds.map((k) => ctype[k]).join(", ")});`);
    const body: string[] = ["size_t o = 0;"];
    kinds.forEach((k, i) => {
      const size = k === "p" ? 8 : 4;
      body.push(`o = (o + ${size - 1}) / ${size} * ${size};`);
      body.push(`${ctype[k]} a${i}; memcpy(&a${i}, b + o, ${size}); o += ${size};`);
    });
    body.push(`${name}(${kinds.map((_, i) => `a${i}`).join(", ")});`);
    lines.push(`static void run_${name}(const unsigned char* b) { ${body.join(" ")} }`);
    entries.push(`{"${name}", run_${name}}`);
  }
  lines.push("struct EmuKernel { const char* name; void (*run)(const unsigned char*); };");
  lines.push(`extern "C" EmuKernel emu_kernels[] = {${entries.join(", ")}, {nullptr, nullptr}};`);
  return lines.join("\n") + "\n";
}

/** Build the emulating driver library into `dir`; returns its path. */
export function buildEmulator(dir: string): string {
  // One block runs at a time, so `__shared__` becomes `static`; dynamic shared memory is
  // the runtime's `smem` array.
  const sources: string[] = [];
  for (const e of Deno.readDirSync(KERNEL_DIR)) {
    if (!e.name.endsWith(".cu") && !e.name.endsWith(".cuh")) continue;
    const text = Deno.readTextFileSync(`${KERNEL_DIR}${e.name}`)
      .replaceAll("extern __shared__", "extern")
      .replaceAll("__shared__", "static");
    Deno.writeTextFileSync(`${dir}/${e.name}`, text);
    if (e.name.endsWith(".cu")) sources.push(`${dir}/${e.name}`);
  }
  Deno.copyFileSync(`${TESTS}cuda_emulator.h`, `${dir}/cuda_bf16.h`);
  Deno.writeTextFileSync(`${dir}/trampolines.cpp`, trampolines());
  const lib = `${dir}/libemucuda.so`;
  const r = new Deno.Command("g++", {
    args: [
      "-std=c++20",
      "-O1",
      "-shared",
      "-fPIC",
      "-pthread",
      "-w",
      "-DTUNE_EMU",
      "-I",
      dir,
      "-I",
      TESTS,
      "-x",
      "c++",
      `${TESTS}cuda_fake_driver.c`,
      ...sources,
      `${TESTS}cuda_emulator.cpp`,
      `${dir}/trampolines.cpp`,
      "-o",
      lib,
    ],
    stderr: "piped",
  }).outputSync();
  assert.ok(r.success, new TextDecoder().decode(r.stderr));
  return lib;
}
