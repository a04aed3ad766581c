/**
 * Every model section of torchtune's own configs (../shared/torchtune/configs) names a
 * builder tune registers, and it builds with the section's keys. Left out, with the reason:
 * QLoRA builders (the memory issue) and the multimodal families (llama3_2_vision, llama4).
 */
import { ok as assert } from "node:assert";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { findComponent } from "../src/config/registry.ts";
import { isMapping, parseConfigYaml } from "../src/config/yaml.ts";
import { parameterCount } from "../src/models/builders/parameter_count.ts";
import "../src/models/components.ts";
import type { ModelSpec } from "../src/models/model_spec.ts";

const CONFIGS = new URL("../../shared/torchtune/configs", import.meta.url).pathname;
const LEFT_OUT = /\.qlora_|llama3_2_vision|llama4/;

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? yamlFiles(p) : n.endsWith(".yaml") ? [p] : [];
  });
}

Deno.test({
  name:
    "every torchtune config's model builder is registered and builds (needs ../shared/torchtune)",
  ignore: !existsSync(CONFIGS),
  fn() {
    let built = 0, leftOut = 0;
    const missing: string[] = [];
    for (const file of yamlFiles(CONFIGS)) {
      const tree = parseConfigYaml(readFileSync(file, "utf8"), file);
      const model = tree.model;
      if (!isMapping(model) || typeof model._component_ !== "string") continue;
      const name = model._component_;
      if (LEFT_OUT.test(name)) {
        leftOut++;
        continue;
      }
      const c = findComponent(name);
      if (!c) {
        missing.push(`${file}: ${name}`);
        continue;
      }
      const { _component_: _, ...args } = model;
      const spec = c.build(args) as ModelSpec;
      assert(parameterCount(spec).total > 0, name);
      built++;
    }
    console.log(`${built} model sections build; ${leftOut} left out (QLoRA, multimodal)`);
    assert(missing.length === 0, `unregistered builders:\n${missing.join("\n")}`);
  },
});
