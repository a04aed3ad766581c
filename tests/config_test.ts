/**
 * The config mechanism on a test recipe with test-only components (names start with
 * `test.`): precedence (defaults < YAML < command line) for scalar, nested and list keys,
 * `~key` deletion, key aliases, interpolation, and each kind of bad input.
 */
import assert from "node:assert/strict";
import { loadRecipeConfig } from "../src/config/load.ts";
import { parseOverrides } from "../src/config/overrides.ts";
import { registerComponent } from "../src/config/registry.ts";
import { instantiate } from "../src/config/instantiate.ts";
import { ignoredKeyNotes } from "../src/config/notes.ts";
import type { ComponentSection, ParamSchema } from "../src/config/schema.ts";
import { closest, editDistance } from "../src/config/suggest.ts";
import { TuneError } from "../src/errors.ts";

registerComponent({
  name: "test.models.tiny_lora",
  aliases: ["test.tiny_lora"],
  kind: "model",
  doc: "test model",
  params: {
    dim: { type: "int", default: 8, doc: "width" },
    lora_attn_modules: { type: "string[]", default: ["q_proj"], doc: "LoRA targets" },
    lora_rank: { type: "int", default: 4, doc: "rank" },
    lora_alpha: { type: "float", default: 8, doc: "alpha" },
  },
  build: (args) => ({ built: "tiny_lora", ...args }),
});
registerComponent({
  name: "test.optim.AdamW",
  kind: "optimizer",
  doc: "test optimizer",
  params: {
    lr: { type: "float", default: 1e-3, doc: "learning rate" },
    betas: { type: "float[]", default: [0.9, 0.999], doc: "betas" },
    fused: { type: "bool", default: false, doc: "fused" },
  },
  build: (args) => args,
});
registerComponent({
  name: "test.logging.Disk",
  kind: "metric_logger",
  doc: "test logger",
  params: { log_dir: { type: "string", required: true, doc: "dir" } },
  build: (args) => args,
});

const params = {
  model: { type: "component", kind: "model", required: true, doc: "model" },
  optimizer: { type: "component", kind: "optimizer", required: true, doc: "optimizer" },
  metric_logger: { type: "component", kind: "metric_logger", default: null, doc: "logger" },
  batch_size: { type: "int", default: 2, doc: "batch" },
  epochs: { type: "int", default: 1, doc: "epochs" },
  seed: { type: "int", default: null, doc: "seed" },
  shuffle: { type: "bool", default: true, doc: "shuffle" },
  device: { type: "string", default: "cpu", choices: ["cpu", "cuda"], doc: "device" },
  output_dir: { type: "string", default: "out/test", doc: "output" },
  stop_tokens: { type: "int[]", default: null, doc: "stop tokens" },
  prompt: { type: "any", default: null, doc: "prompt" },
  data: {
    type: "section",
    doc: "a plain section",
    params: {
      max_seq_len: { type: "int", default: 16, doc: "length" },
      packed: { type: "bool", default: false, doc: "packing" },
    },
  },
} satisfies ParamSchema;

const recipe = {
  name: "test_recipe",
  params,
  keyAliases: { lora_rank: "model.lora_rank", lora_attn_modules: "model.lora_attn_modules" },
};

const dir = Deno.makeTempDirSync({ prefix: "tune_config_test_" });
let n = 0;
function yamlFile(text: string): string {
  const path = `${dir}/c${n++}.yaml`;
  Deno.writeTextFileSync(path, text);
  return path;
}

const BASE = `
model:
  _component_: test.models.tiny_lora
  lora_attn_modules: [q_proj, v_proj]
optimizer:
  _component_: test.optim.AdamW
  lr: 2e-5
batch_size: 4
`;

function load(text: string, args: string[] = []) {
  return loadRecipeConfig(recipe, yamlFile(text), parseOverrides(args)).config;
}

function tuneError(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof TuneError, `expected a TuneError, got ${e}`);
    assert.ok(!e.message.includes("\n"), `message is one line: ${e.message}`);
    return e.message;
  }
  throw new Error("expected a TuneError");
}

Deno.test("loadRecipeConfig() applies default < YAML < CLI for a scalar key", () => {
  assert.equal(
    load("model: {_component_: test.models.tiny_lora}\noptimizer: {_component_: test.optim.AdamW}")
      .batch_size,
    2,
  );
  assert.equal(load(BASE).batch_size, 4);
  assert.equal(load(BASE, ["batch_size=8"]).batch_size, 8);
  assert.equal(load(BASE, ["batch_size=8", "batch_size=16"]).batch_size, 16, "later override wins");
});

Deno.test("loadRecipeConfig() applies default < YAML < CLI for a nested key", () => {
  const noLr =
    "model: {_component_: test.models.tiny_lora}\noptimizer: {_component_: test.optim.AdamW}";
  assert.equal((load(noLr).optimizer as ComponentSection).lr, 1e-3);
  assert.equal((load(BASE).optimizer as ComponentSection).lr, 2e-5);
  assert.equal((load(BASE, ["optimizer.lr=3e-4"]).optimizer as ComponentSection).lr, 3e-4);
  assert.equal(load(BASE, ["data.max_seq_len=32"]).data.max_seq_len, 32);
  assert.equal(load(BASE).data.max_seq_len, 16, "a plain section gets its defaults");
});

Deno.test("loadRecipeConfig() applies default < YAML < CLI for a list key, comma or flow syntax", () => {
  const model = (args: string[], text = BASE) => load(text, args).model as ComponentSection;
  assert.deepEqual(
    model(
      [],
      "model: {_component_: test.models.tiny_lora}\noptimizer: {_component_: test.optim.AdamW}",
    )
      .lora_attn_modules,
    ["q_proj"],
  );
  assert.deepEqual(model([]).lora_attn_modules, ["q_proj", "v_proj"]);
  assert.deepEqual(model(["model.lora_attn_modules=q_proj,k_proj,v_proj"]).lora_attn_modules, [
    "q_proj",
    "k_proj",
    "v_proj",
  ]);
  assert.deepEqual(model(["model.lora_attn_modules=[k_proj, output_proj]"]).lora_attn_modules, [
    "k_proj",
    "output_proj",
  ]);
  assert.deepEqual(model(["model.lora_attn_modules=[]"]).lora_attn_modules, []);
  const opt = load(BASE, ["optimizer.betas=0.8,0.95"]).optimizer as ComponentSection;
  assert.deepEqual(opt.betas, [0.8, 0.95]);
  assert.deepEqual(load(BASE, ["stop_tokens=[2, 13]"]).stop_tokens, [2, 13]);
});

Deno.test("loadRecipeConfig() parses numbers and booleans by declared type", () => {
  const cfg = load(BASE, ["shuffle=false", "seed=7", "optimizer.fused=True", "prompt=42"]);
  assert.equal(cfg.shuffle, false);
  assert.equal(cfg.seed, 7);
  assert.equal((cfg.optimizer as ComponentSection).fused, true);
  assert.equal(cfg.prompt, "42", "free-form values from the command line stay text");
  assert.equal(load(BASE, ["seed=null"]).seed, null);
});

Deno.test("loadRecipeConfig() deletes a key with ~key so its default applies again", () => {
  assert.equal(load(BASE, ["~batch_size"]).batch_size, 2);
  assert.equal((load(BASE, ["~optimizer.lr"]).optimizer as ComponentSection).lr, 1e-3);
  assert.equal(
    load(BASE + "metric_logger: {_component_: test.logging.Disk, log_dir: x}\n", [
      "~metric_logger",
    ]).metric_logger,
    null,
  );
  assert.match(tuneError(() => load(BASE, ["~epochs"])), /cannot delete '~epochs'/);
});

Deno.test("loadRecipeConfig() sends top-level alias keys to their target, from YAML or CLI", () => {
  const m = (text: string, args: string[]) => load(text, args).model as ComponentSection;
  assert.equal(m(BASE, ["lora_rank=16"]).lora_rank, 16);
  assert.deepEqual(m(BASE, ["lora_attn_modules=q_proj,k_proj"]).lora_attn_modules, [
    "q_proj",
    "k_proj",
  ]);
  assert.equal(m(BASE + "lora_rank: 2\n", []).lora_rank, 2);
  assert.equal(m(BASE + "lora_rank: 2\n", ["lora_rank=3"]).lora_rank, 3, "CLI beats YAML alias");
  assert.equal(m(BASE + "lora_rank: 2\n", ["model.lora_rank=5"]).lora_rank, 5);
});

Deno.test("loadRecipeConfig() resolves ${key} interpolation after overrides, with defaults", () => {
  const text = BASE +
    "metric_logger:\n  _component_: test.logging.Disk\n  log_dir: ${output_dir}/logs\n";
  assert.equal((load(text).metric_logger as ComponentSection).log_dir, "out/test/logs");
  assert.equal(
    (load(text, ["output_dir=/tmp/run1"]).metric_logger as ComponentSection).log_dir,
    "/tmp/run1/logs",
  );
  assert.equal(load(BASE + "epochs: ${batch_size}\n").epochs, 4);
  assert.match(tuneError(() => load(BASE + "output_dir: ${nope}\n")), /\$\{nope\}/);
});

Deno.test("loadRecipeConfig() names the key, recipe and closest key for an unknown key", () => {
  const msg = tuneError(() => load(BASE, ["batch_sise=3"]));
  assert.match(msg, /unknown key 'batch_sise' for recipe test_recipe; did you mean 'batch_size'\?/);
  const nested = tuneError(() => load(BASE, ["optimizer.lrr=3"]));
  assert.match(nested, /unknown key 'optimizer.lrr'.*test_recipe.*did you mean 'optimizer.lr'/);
  // a top-level key that a component section has points there
  const inSection = tuneError(() => load(BASE, ["fused=true"]));
  assert.match(inSection, /unknown key 'fused'.*; did you mean 'optimizer.fused'\?$/);
});

Deno.test("loadRecipeConfig() names key, expected type and value for a wrong type", () => {
  assert.match(
    tuneError(() => load(BASE, ["batch_size=abc"])),
    /'batch_size': expected int, got 'abc'/,
  );
  assert.match(tuneError(() => load(BASE, ["batch_size=1.5"])), /expected int, got '1.5'/);
  assert.match(
    tuneError(() => load(BASE, ["shuffle=maybe"])),
    /'shuffle': expected bool, got 'maybe'/,
  );
  assert.match(tuneError(() => load(BASE, ["device=tpu"])), /one of cpu\|cuda, got 'tpu'/);
  assert.match(
    tuneError(() => load(BASE, ["optimizer.lr=fast"])),
    /'optimizer.lr': expected float/,
  );
  assert.match(tuneError(() => load(BASE, ["stop_tokens=1,x"])), /expected int\[\]/);
});

Deno.test("loadRecipeConfig() suggests the closest name for an unknown _component_", () => {
  const msg = tuneError(() => load(BASE, ["optimizer._component_=test.optim.AdamX"]));
  assert.match(msg, /unknown _component_ 'test.optim.AdamX'.*did you mean 'test.optim.AdamW'/);
  assert.match(
    tuneError(() => load(BASE, ["model._component_=test.optim.AdamW"])),
    /optimizer builder; 'model' needs a model builder/,
  );
});

Deno.test("loadRecipeConfig() accepts a component alias and stores the canonical name", () => {
  const cfg = load(BASE, ["model._component_=test.tiny_lora"]);
  assert.equal((cfg.model as ComponentSection)._component_, "test.models.tiny_lora");
});

Deno.test("loadRecipeConfig() reports a missing required key and a missing config", () => {
  assert.match(
    tuneError(() => load("optimizer: {_component_: test.optim.AdamW}")),
    /missing key 'model'/,
  );
  const msg = tuneError(() => loadRecipeConfig(recipe, `${dir}/absent.yaml`, []));
  assert.match(
    msg,
    /config '.*absent.yaml' not found: no file .*absent.yaml.*tune ls lists the shipped configs/,
  );
});

Deno.test("loadRecipeConfig() names file and line of malformed YAML", () => {
  const path = yamlFile("batch_size: 4\nmodel: [a, b\noptimizer: 3\n");
  const msg = tuneError(() => loadRecipeConfig(recipe, path, []));
  assert.ok(msg.startsWith(`malformed YAML in ${path} at line 3:`), msg);
});

Deno.test("parseOverrides() rejects arguments that are not key=value or ~key", () => {
  assert.match(tuneError(() => parseOverrides(["batch_size"])), /bad override 'batch_size'/);
  assert.match(tuneError(() => parseOverrides(["=3"])), /bad override '=3'/);
});

Deno.test("instantiate() builds a resolved section with extra run-time arguments", () => {
  const cfg = load(BASE);
  const built = instantiate<Record<string, unknown>>(cfg.model as ComponentSection, { extra: 1 });
  assert.equal(built.built, "tiny_lora");
  assert.equal(built.dim, 8);
  assert.equal(built.extra, 1);
  assert.equal(built._component_, undefined);
});

Deno.test("editDistance() and closest() pick the nearest candidate", () => {
  assert.equal(editDistance("kitten", "sitting"), 3);
  assert.equal(closest("optimzer", ["model", "optimizer", "output_dir"]), "optimizer");
  assert.equal(closest("x", []), undefined);
});

globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

Deno.test("ignoredKeyNotes() notes keys accepted for torchtune configs but ignored, when set", () => {
  const schema = {
    compile: {
      type: "bool",
      default: false,
      doc: "accepted for torchtune configs; ignored (no torch.compile here)",
    },
    epochs: { type: "int", default: 1, doc: "epochs" },
  } satisfies ParamSchema;
  assert.deepEqual(ignoredKeyNotes(schema, { compile: false, epochs: 3 }), []);
  assert.deepEqual(ignoredKeyNotes(schema, { compile: true, epochs: 1 }), [
    "compile=true is ignored (no torch.compile here)",
  ]);
});
