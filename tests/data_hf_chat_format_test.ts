/**
 * chat_format hf: checkpoints' own Jinja chat templates rendered with @huggingface/jinja.
 *
 * 1. Rendering: five real models' templates (tests/data/chat_templates/, see its README) give
 *    exactly the text other implementations' test suites expect for their conversations.
 * 2. Tokens: Qwen2.5's and Llama 3.1's templates on small real tokenizer.json files (byte-level
 *    BPE made by the `tokenizers` library, tests/fixtures/tokenizer_bpe_cases.json) give the
 *    same ids and masks as the built-in chatml and llama3 formats for the same conversation.
 * Tolerance: exact.
 */
import { deepStrictEqual, strictEqual, throws } from "node:assert";
import {
  type HfMessage,
  type Message,
  renderChat,
  resolveChatFormat,
  textMessage,
  tokenizeMessages,
} from "../src/data/mod.ts";
import { TuneError } from "../src/errors.ts";
import { findComponent } from "../src/config/registry.ts";
import "../src/tokenizers/components.ts";
import { readChatTemplate } from "../src/tokenizers/chat_template.ts";
import type { Tokenizer } from "../src/tokenizers/types.ts";

const DIR = new URL("./data/chat_templates/", import.meta.url).pathname;
const expected: Record<
  string,
  { model: string; context: Record<string, unknown>; target: string }
> = JSON.parse(Deno.readTextFileSync(`${DIR}expected.json`));

const template = (name: string) => readChatTemplate(`${DIR}${name}/tokenizer_config.json`, true);

for (const name of ["qwen2_5", "llama3_1", "mistral_v0_1", "gemma", "phi3"]) {
  Deno.test(`renderChat() renders ${expected[name].model}'s template as its expected text`, () => {
    const { messages, add_generation_prompt, ...rest } = expected[name].context;
    const text = renderChat(
      template(name),
      messages as HfMessage[],
      Boolean(add_generation_prompt),
      rest,
    );
    strictEqual(text, expected[name].target);
  });
}

// deno-lint-ignore no-explicit-any
const bpe: Record<string, { tokenizer: any }> = JSON.parse(
  Deno.readTextFileSync(new URL("./fixtures/tokenizer_bpe_cases.json", import.meta.url)),
);

/**
 * A tokenizer.json fixture (plus added tokens) built by tune's components with
 * `chat_template: hf`: Qwen via qwen2_5_tokenizer with the model's tokenizer_config.json beside
 * it (EOS <|im_end|> as torchtune's Qwen2_5Tokenizer), Llama via the generic loader with the
 * template file given as a path (EOS <|end_of_text|> from the file, as torchtune's Llama 3).
 */
function withTemplate(fixture: string, name: string, extra: [string, number][] = []): Tokenizer {
  const json = structuredClone(bpe[fixture].tokenizer);
  for (const [content, id] of extra) {
    json.added_tokens.push({
      id,
      content,
      special: true,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
    });
  }
  const dir = Deno.makeTempDirSync({ prefix: "tune_hf_chat_" });
  try {
    Deno.writeTextFileSync(`${dir}/tokenizer.json`, JSON.stringify(json));
    const common = { path: `${dir}/tokenizer.json`, max_seq_len: null, prompt_template: null };
    if (name === "qwen2_5") {
      Deno.copyFileSync(`${DIR}qwen2_5/tokenizer_config.json`, `${dir}/tokenizer_config.json`);
      return findComponent("torchtune.models.qwen2_5.qwen2_5_tokenizer")!.build({
        ...common,
        merges_file: null,
        chat_template: "hf",
      }) as Tokenizer;
    }
    return findComponent("tune.tokenizers.load")!.build({
      ...common,
      chat_template: `${DIR}${name}/tokenizer_config.json`,
    }) as Tokenizer;
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

function masked(m: Message, v: boolean): Message {
  return { ...m, masked: v };
}

Deno.test("chat_format hf with Qwen2.5's template gives the chatml format's ids and masks (tool call and result)", () => {
  const tok = withTemplate("hf_qwen2", "qwen2_5", [["<tool_call>", 281], ["</tool_call>", 282]]);
  const call = '{"name": "get_weather", "arguments": {"city": "Paris"}}';
  const conversation = [
    masked(textMessage("system", "You are terse."), true),
    masked(textMessage("user", "Weather in Paris?"), true),
    { ...textMessage("assistant", call, { eot: false }), ipython: true },
    masked(textMessage("ipython", "sunny, 21C", { eot: false }), true),
    textMessage("assistant", "Sunny, 21C."),
  ];
  // the tokenizer's EOS is <|im_end|>, as Qwen2.5's (torchtune's Qwen2_5Tokenizer default)
  strictEqual(tok.eosId, tok.specialTokens!.get("<|im_end|>"));
  const tokQwen = tok;
  const builtIn = tokenizeMessages(tokQwen, conversation, "chatml");
  const hf = tokenizeMessages(tokQwen, conversation, "hf");
  deepStrictEqual(hf.tokens, builtIn.tokens);
  deepStrictEqual(hf.mask, builtIn.mask);
  strictEqual(
    tokQwen.decode(hf.tokens, { skipSpecial: false }),
    "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n" +
      `<|im_start|>assistant\n<tool_call>\n${call}\n</tool_call><|im_end|>\n` +
      "<|im_start|>user\n<tool_response>\nsunny, 21C\n</tool_response><|im_end|>\n" +
      "<|im_start|>assistant\nSunny, 21C.<|im_end|>",
  );
});

Deno.test("chat_format hf with Llama 3.1's template gives the llama3 format's ids", () => {
  const tok = withTemplate("hf_llama3", "llama3_1");
  // Llama 3.1's template always opens the system turn with its knowledge-date lines; the
  // built-in format gets them as the system text, everything else is the same conversation
  const dates = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
  const rest = [
    masked(textMessage("user", "Hi there"), true),
    textMessage("assistant", "Hello!"),
    masked(textMessage("user", "2+2?"), true),
    textMessage("assistant", "4"),
  ];
  const hf = tokenizeMessages(
    tok,
    [masked(textMessage("system", "Be brief."), true), ...rest],
    "hf",
  );
  const builtIn = tokenizeMessages(
    tok,
    [masked(textMessage("system", dates + "Be brief."), true), ...rest],
    "llama3",
  );
  deepStrictEqual(hf.tokens, builtIn.tokens);
  // masks agree except the final <|end_of_text|>, which torchtune's Llama 3 masks and hf
  // gives the last message's mask
  deepStrictEqual(hf.mask.slice(0, -1), builtIn.mask.slice(0, -1));
  deepStrictEqual([hf.mask.at(-1), builtIn.mask.at(-1)], [false, true]);
});

Deno.test("chat_format hf leaves a generation prompt open and auto picks hf only when forced or nothing fits", () => {
  const tok = withTemplate("hf_qwen2", "qwen2_5");
  const prompt = tokenizeMessages(tok, [textMessage("user", "Hi")], "hf", { addEnd: false });
  strictEqual(
    tok.decode(prompt.tokens, { skipSpecial: false }),
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n" +
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
  );
  strictEqual(resolveChatFormat("auto", tok, "none"), "hf"); // forced (tokenizer.chat_template)
  const found = Object.assign(Object.create(Object.getPrototypeOf(tok)), tok, {
    chatTemplate: { ...tok.chatTemplate!, force: false },
  });
  strictEqual(resolveChatFormat("auto", found, "none"), "chatml"); // a built-in format fits
  const bare = Object.assign(Object.create(Object.getPrototypeOf(tok)), tok, {
    chatTemplate: null,
  });
  throws(
    () => resolveChatFormat("hf", bare, "none"),
    (e) =>
      e instanceof TuneError &&
      /chat_format hf needs the checkpoint's Jinja chat template/.test(e.message),
  );
});

Deno.test("chat_format hf refuses a template whose earlier messages change when later ones follow", () => {
  const tok = withTemplate("hf_qwen2", "qwen2_5");
  const odd = Object.assign(Object.create(Object.getPrototypeOf(tok)), tok, {
    chatTemplate: {
      ...tok.chatTemplate!,
      template: "{% for m in messages %}{{ m.content if loop.last else 'x' }}{% endfor %}",
    },
  });
  throws(
    () => tokenizeMessages(odd, [textMessage("user", "a"), textMessage("assistant", "b")], "hf"),
    (e) =>
      e instanceof TuneError &&
      /renders message 0 differently once message 1 follows/.test(e.message),
  );
});

Deno.test("chat_format hf with Mistral v0.1's template on Llama 2's SentencePiece model: each text between <s>/</s> encoded whole", () => {
  const dir = Deno.makeTempDirSync({ prefix: "tune_hf_chat_sp_" });
  let tok: Tokenizer;
  try {
    Deno.copyFileSync(
      new URL("./data/tokenizers/llama2/tokenizer.model", import.meta.url).pathname,
      `${dir}/tokenizer.model`,
    );
    Deno.copyFileSync(`${DIR}mistral_v0_1/tokenizer_config.json`, `${dir}/tokenizer_config.json`);
    tok = findComponent("torchtune.models.mistral.mistral_tokenizer")!.build({
      path: `${dir}/tokenizer.model`,
      max_seq_len: null,
      prompt_template: null,
      chat_template: "hf",
    }) as Tokenizer;
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  const msgs = [
    masked(textMessage("user", "Hello, how are you?"), true),
    textMessage("assistant", "I'm doing great."),
    masked(textMessage("user", "Show me."), true),
    textMessage("assistant", "Here."),
  ];
  const { tokens, mask } = tokenizeMessages(tok, msgs, "hf");
  // the rendered text is <s>[INST] U [/INST]A</s>[INST] U [/INST]A</s>; Hugging Face's
  // tokenizer encodes each text between special tokens with SentencePiece (dummy prefix)
  const e = (s: string) => tok.encode(s, { bos: false });
  const first = e("[INST] Hello, how are you? [/INST]I'm doing great.");
  const second = e("[INST] Show me. [/INST]Here.");
  deepStrictEqual(tokens, [tok.bosId, ...first, tok.eosId, ...second, tok.eosId]);
  // the answers (and their </s>) are trained, the [INST] turns masked
  const prompt1 = e("[INST] Hello, how are you? [/INST]").length;
  const prompt2 = e("[INST] Show me. [/INST]").length;
  deepStrictEqual(mask, [
    ...Array(1 + prompt1).fill(true),
    ...Array(first.length - prompt1 + 1).fill(false),
    ...Array(prompt2).fill(true),
    ...Array(second.length - prompt2 + 1).fill(false),
  ]);
});
