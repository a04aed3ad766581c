/**
 * ffi/openblas.ts asks OpenBLAS for its AVX-512 kernels on AMD CPUs that have them (0.3.21
 * does not recognise Zen 4) unless OPENBLAS_CORETYPE is set, and leaves an explicit setting
 * alone. Each case opens the library in a fresh process with the environment it names.
 */
import assert from "node:assert/strict";
import { openBlas } from "../ffi/openblas.ts";
import { openBlasProbe } from "./_openblas_probe.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const PROBE =
  `import { openBlas } from "${ROOT}ffi/openblas.ts"; console.log(openBlas()?.config ?? "none");`;

function configWith(coreType: string | null): string {
  return openBlasProbe(PROBE, { OPENBLAS_CORETYPE: coreType });
}

function amdWithAvx512(): boolean {
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    const flags = info.match(/^flags\s*:(.*)$/m)?.[1].split(/\s+/) ?? [];
    return /^vendor_id\s*:\s*AuthenticAMD$/m.test(info) &&
      ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"].every((f) => flags.includes(f));
  } catch {
    return false;
  }
}

const dynamic = openBlas()?.config.includes("DYNAMIC_ARCH") ?? false;

Deno.test({
  name: "OpenBLAS core type: SkylakeX on AMD with AVX-512 when unset, an explicit one kept " +
    "(ignored without a DYNAMIC_ARCH OpenBLAS)",
  ignore: !dynamic,
  fn() {
    assert.match(configWith("Haswell"), / Haswell /);
    const unset = configWith(null);
    if (amdWithAvx512()) assert.match(unset, / SkylakeX /);
    else assert.notEqual(unset, "none"); // OpenBLAS's own choice, whatever this CPU is
  },
});
