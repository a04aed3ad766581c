/**
 * `tokenizer.chat_template`: where the checkpoint's Jinja template is read from (the
 * tokenizer_config.json beside the tokenizer file, a path, or none) and how it sets what
 * chat_format auto picks. The template text is Qwen2.5's (tests/data/chat_templates/).
 */
import { strictEqual, throws } from "node:assert";
import { findComponent } from "../src/config/registry.ts";
import { resolveChatFormat } from "../src/data/mod.ts";
import { TuneError } from "../src/errors.ts";
import "../src/tokenizers/components.ts";
import type { Tokenizer } from "../src/tokenizers/types.ts";

// deno-lint-ignore no-explicit-any
const bpe: Record<string, { tokenizer: any }> = JSON.parse(
  Deno.readTextFileSync(new URL("./fixtures/tokenizer_bpe_cases.json", import.meta.url)),
);
const qwenConfig = Deno.readTextFileSync(
  new URL("./data/chat_templates/qwen2_5/tokenizer_config.json", import.meta.url),
);

function inDir<T>(files: Record<string, string>, fn: (dir: string) => T): T {
  const dir = Deno.makeTempDirSync({ prefix: "tune_chat_template_" });
  try {
    for (const [name, text] of Object.entries(files)) {
      Deno.writeTextFileSync(`${dir}/${name}`, text);
    }
    return fn(dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

const build = (name: string, args: Record<string, unknown>) =>
  findComponent(name)!.build({ max_seq_len: null, prompt_template: null, ...args }) as Tokenizer;

Deno.test("chat_template: the generic loader finds tokenizer_config.json; auto uses it only when nothing built-in fits", () => {
  // a byte-level tokenizer with no chat special tokens: no built-in format fits -> hf
  const plain = structuredClone(bpe.hf_llama3.tokenizer);
  plain.added_tokens = [];
  inDir({ "tokenizer.json": JSON.stringify(plain), "tokenizer_config.json": qwenConfig }, (dir) => {
    const tok = build("tune.tokenizers.load", {
      path: `${dir}/tokenizer.json`,
      chat_template: null,
    });
    strictEqual(tok.chatTemplate?.force, false);
    strictEqual(tok.chatTemplate?.eosToken, "<|im_end|>");
    strictEqual(resolveChatFormat("auto", tok, "none"), "hf");
  });
  // Qwen's special tokens: chatml fits and wins unless chat_template is set
  inDir({
    "tokenizer.json": JSON.stringify(bpe.hf_qwen2.tokenizer),
    "tokenizer_config.json": qwenConfig,
  }, (dir) => {
    const found = build("tune.tokenizers.load", {
      path: `${dir}/tokenizer.json`,
      chat_template: null,
    });
    strictEqual(resolveChatFormat("auto", found, "none"), "chatml");
    const forced = build("torchtune.models.qwen2_5.qwen2_5_tokenizer", {
      path: `${dir}/tokenizer.json`,
      merges_file: null,
      chat_template: "hf",
    });
    strictEqual(resolveChatFormat("auto", forced, "none"), "hf");
    // a family tokenizer keeps torchtune's format when chat_template is unset
    const family = build("torchtune.models.qwen2_5.qwen2_5_tokenizer", {
      path: `${dir}/tokenizer.json`,
      merges_file: null,
      chat_template: null,
    });
    strictEqual(family.chatTemplate, null);
    // a path to a template file
    Deno.writeTextFileSync(`${dir}/t.jinja`, "{% for m in messages %}{{ m.content }}{% endfor %}");
    const byPath = build("tune.tokenizers.load", {
      path: `${dir}/tokenizer.json`,
      chat_template: `${dir}/t.jinja`,
    });
    strictEqual(byPath.chatTemplate?.template.startsWith("{% for m"), true);
    strictEqual(byPath.chatTemplate?.bosToken, ""); // from the tokenizer_config.json beside it
  });
});

Deno.test("chat_template: hf without a template beside the file, or a missing path, is a one-line error", () => {
  const oneLine = (re: RegExp) => (e: unknown) =>
    e instanceof TuneError && !e.message.includes("\n") && re.test(e.message);
  inDir({ "tokenizer.json": JSON.stringify(bpe.hf_qwen2.tokenizer) }, (dir) => {
    throws(
      () => build("tune.tokenizers.load", { path: `${dir}/tokenizer.json`, chat_template: "hf" }),
      oneLine(/chat_template=hf: no tokenizer_config.json with a chat_template beside/),
    );
    throws(
      () =>
        build("tune.tokenizers.load", {
          path: `${dir}/tokenizer.json`,
          chat_template: `${dir}/nope.json`,
        }),
      oneLine(/tokenizer.chat_template file .*nope.json not found/),
    );
  });
});
