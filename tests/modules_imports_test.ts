/**
 * Imports point one way (cli -> recipes -> src (training -> models -> modules -> backend) -> ffi):
 * src/modules, the building blocks, import only the op interface, the parameter helpers, the
 * error class and each other, never a model, a recipe or training code.
 */
import { ok as assert } from "node:assert";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const MODULES = new URL("../src/modules/", import.meta.url).pathname;
const ALLOWED =
  /^(\.\/[a-z_]+\.ts|\.\.\/backend\/[a-z_/]+\.ts|\.\.\/params\/[a-z_]+\.ts|\.\.\/errors\.ts)$/;

Deno.test("src/modules imports only src/backend, src/params, src/errors.ts and src/modules", () => {
  const bad: string[] = [];
  for (const f of readdirSync(MODULES).filter((n) => n.endsWith(".ts"))) {
    const text = readFileSync(join(MODULES, f), "utf8");
    for (const m of text.matchAll(/\bfrom\s+"([^"]+)"/g)) {
      if (!ALLOWED.test(m[1])) bad.push(`src/modules/${f} imports ${m[1]}`);
    }
  }
  assert(bad.length === 0, bad.join("\n"));
});
