import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert";
import { findComponent } from "../src/config/registry.ts";
import "../src/models/components.ts";
import { parameterCount } from "../src/models/builders/parameter_count.ts";
import type { ModelSpec } from "../src/models/model_spec.ts";
import { TuneError } from "../src/errors.ts";

// Published parameter counts (model cards / Hugging Face safetensors metadata; stories15M
// from llama2.c's stories15M.bin size). Tied embeddings count once.
const PUBLISHED: [string, number][] = [
  ["torchtune.models.llama2.llama2_7b", 6_738_415_616],
  ["torchtune.models.llama2.llama2_13b", 13_015_864_320],
  ["torchtune.models.llama2.llama2_70b", 68_976_648_192],
  ["torchtune.models.llama3.llama3_8b", 8_030_261_248],
  ["torchtune.models.llama3.llama3_70b", 70_553_706_496],
  ["torchtune.models.llama3_1.llama3_1_8b", 8_030_261_248],
  ["torchtune.models.llama3_1.llama3_1_70b", 70_553_706_496],
  ["torchtune.models.llama3_1.llama3_1_405b", 405_853_388_800],
  ["torchtune.models.llama3_2.llama3_2_1b", 1_235_814_400],
  ["torchtune.models.llama3_2.llama3_2_3b", 3_212_749_824],
  ["torchtune.models.mistral.mistral_7b", 7_241_732_096],
  ["torchtune.models.qwen2_5.qwen2_5_0_5b", 494_032_768],
  ["torchtune.models.qwen2_5.qwen2_5_1_5b", 1_543_714_304],
  ["torchtune.models.qwen2_5.qwen2_5_7b", 7_615_616_512],
  ["torchtune.models.qwen2.qwen2_0_5b", 494_032_768],
  ["torchtune.models.qwen2.qwen2_1_5b", 1_543_714_304],
  ["torchtune.models.qwen2.qwen2_7b", 7_615_616_512],
  ["torchtune.models.qwen2_5.qwen2_5_1_5b_base", 1_543_714_304],
  ["torchtune.models.qwen2_5.qwen2_5_3b", 3_085_938_688],
  ["torchtune.models.qwen2_5.qwen2_5_7b_instruct", 7_615_616_512],
  ["torchtune.models.qwen2_5.qwen2_5_14b_instruct", 14_770_033_664],
  ["torchtune.models.qwen2_5.qwen2_5_32b_base", 32_763_876_352],
  ["torchtune.models.qwen2_5.qwen2_5_72b_instruct", 72_706_203_648],
  ["torchtune.models.llama3_3.llama3_3_70b", 70_553_706_496],
  ["torchtune.models.phi4.phi4_14b", 14_659_507_200],
  ["tune.models.llama2c.stories15m", 15_191_712],
];

function build(name: string, args: Record<string, unknown> = {}): ModelSpec {
  const spec = findComponent(name);
  if (!spec) throw new Error(`${name} is not registered`);
  return spec.build(args) as ModelSpec;
}

Deno.test("parameterCount() matches published counts for every fixed-size builder", () => {
  for (const [name, want] of PUBLISHED) {
    const got = parameterCount(build(name)).total;
    assertEquals(got, want, `${name}: ${got} != ${want}`);
    console.log(`${name}: ${got.toLocaleString("en-US")}`);
  }
});

Deno.test("parameterCount() adds r*(in+out) per adapted linear for LoRA builders", () => {
  const spec = build("torchtune.models.llama3_2.lora_llama3_2_1b", {
    lora_attn_modules: ["q_proj", "v_proj"],
    apply_lora_to_mlp: false,
    apply_lora_to_output: false,
    lora_rank: 8,
    lora_alpha: 16,
    lora_dropout: 0,
  });
  const c = parameterCount(spec);
  assertEquals(c.base, 1_235_814_400);
  // q: 8*(2048+2048), v: 8*(2048+512), 16 layers; this is PEFT's reported 851,968.
  assertEquals(c.lora, 16 * (8 * (2048 + 2048) + 8 * (2048 + 512)));
  assertEquals(c.lora, 851_968);
});

Deno.test("short names torchtune.models.llama2_7b / lora_llama2_7b are registered", () => {
  assertEquals(build("torchtune.models.llama2_7b").config.dim, 4096);
  const l = build("torchtune.models.lora_llama2_7b", { lora_attn_modules: ["q_proj"] });
  assertEquals(l.lora?.rank, 8);
  assertEquals(l.lora?.attnModules, ["q_proj"]);
});

Deno.test("qwen2_5 builders have q/k/v bias and small ones tie embeddings", () => {
  const s = build("torchtune.models.qwen2_5.qwen2_5_0_5b").config;
  assertEquals([s.qkvBias, s.tiedEmbeddings, s.nKvHeads, s.ropeTheta], [true, true, 2, 1e6]);
  const b = build("torchtune.models.qwen2_5.qwen2_5_7b").config;
  assertEquals([b.qkvBias, b.tiedEmbeddings], [true, false]);
});

Deno.test("llama3_1 and llama3_2 builders carry llama3 rope scaling", () => {
  assertEquals(build("torchtune.models.llama3_1.llama3_1_8b").config.ropeScaling?.factor, 8);
  assertEquals(build("torchtune.models.llama3_2.llama3_2_3b").config.ropeScaling?.factor, 32);
  assertEquals(build("torchtune.models.llama3.llama3_8b").config.ropeScaling, null);
});

Deno.test("generic tune.models.llama builder takes torchtune keys", () => {
  const spec = build("tune.models.llama", {
    vocab_size: 512,
    num_layers: 2,
    num_heads: 4,
    num_kv_heads: 2,
    embed_dim: 64,
    intermediate_dim: null,
    max_seq_len: 128,
    norm_eps: 1e-5,
    rope_base: 10000,
    tie_word_embeddings: true,
    qkv_bias: false,
    rope_layout: "interleaved",
    attn_dropout: 0,
  });
  // torchtune's scale_hidden_dim_for_mlp(64) = 256 * ceil(170 / 256) = 256.
  assertEquals(spec.config.hiddenDim, 256);
  assertEquals(spec.config.ropeLayout, "interleaved");
  // 512*64 + 2*(4*64 + 64*64*2 + 32*64*2 + 3*256*64) + 64
  assertEquals(
    parameterCount(spec).total,
    512 * 64 + 2 * (128 + 2 * 4096 + 2 * 2048 + 3 * 16384) + 64,
  );
});

Deno.test("LoRA builders refuse unknown modules and output LoRA on tied models", () => {
  assertThrows(
    () => build("torchtune.models.llama3_2.lora_llama3_2_1b", { lora_attn_modules: ["qq_proj"] }),
    TuneError,
  );
  assertThrows(
    () =>
      build("torchtune.models.llama3_2.lora_llama3_2_1b", {
        lora_attn_modules: ["q_proj"],
        apply_lora_to_output: true,
      }),
    TuneError,
  );
});
