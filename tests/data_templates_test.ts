/**
 * Exact text of the Alpaca prompt and of every chat format. The byte tokenizer decodes ids
 * back to text (BOS as <s>, EOS as </s>, special tokens by name), so comparing decoded
 * strings checks every token. Tolerance: exact string equality.
 */
import { deepStrictEqual, strictEqual, throws } from "node:assert";
import {
  ALPACA_PROMPT_INPUT,
  ALPACA_PROMPT_NO_INPUT,
  alpacaPrompt,
  alpacaToMessages,
  resolveChatFormat,
  textMessage,
  tokenizeMessages,
} from "../src/data/mod.ts";
import type { Message } from "../src/data/mod.ts";
import { TuneError } from "../src/errors.ts";
import { ByteTokenizer, CHATML_SPECIALS, LLAMA3_SPECIALS } from "./data_byte_tokenizer_test.ts";

const ctx = { source: "test", index: 0 };

function conversation(): Message[] {
  return [
    textMessage("system", "Be brief."),
    textMessage("user", "Hi there"),
    textMessage("assistant", "Hello!"),
    textMessage("user", "2+2?"),
    textMessage("assistant", "4"),
  ];
}

Deno.test("`alpacaPrompt()` matches the Stanford Alpaca text with and without input", () => {
  strictEqual(
    alpacaPrompt("Add the numbers.", "1 2"),
    "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nAdd the numbers.\n\n### Input:\n1 2\n\n### Response:\n",
  );
  strictEqual(
    alpacaPrompt("Give three tips for staying healthy.", ""),
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nGive three tips for staying healthy.\n\n### Response:\n",
  );
  // `$` patterns in the data are kept literally.
  strictEqual(
    alpacaPrompt("Say $&", null),
    ALPACA_PROMPT_NO_INPUT.replace("{instruction}", () => "Say $&"),
  );
  strictEqual(ALPACA_PROMPT_INPUT.includes("{input}"), true);
});

Deno.test("`tokenizeMessages()` none format gives BOS + Alpaca prompt + response + EOS", () => {
  const tok = new ByteTokenizer();
  const msgs = alpacaToMessages({ instruction: "Add.", input: "1 2", output: "3" }, ctx, {
    trainOnInput: false,
  });
  const { tokens } = tokenizeMessages(tok, msgs, "none");
  strictEqual(tok.render(tokens), `<s>${alpacaPrompt("Add.", "1 2")}3</s>`);
});

Deno.test("`tokenizeMessages()` trims the response's dummy prefix when the tokenizer adds one", () => {
  // SentencePiece-like: encode("x") = " x". The prompt keeps its dummy space, the response
  // (a continuation after "...### Response:\n") is encoded without it, as torchtune does.
  const tok = new ByteTokenizer({ dummyPrefix: true });
  const msgs = alpacaToMessages({ instruction: "Add.", input: "", output: "3" }, ctx, {
    trainOnInput: true,
  });
  const { tokens } = tokenizeMessages(tok, msgs, "none");
  strictEqual(tok.render(tokens), `<s> ${alpacaPrompt("Add.")}3</s>`);
});

Deno.test("`tokenizeMessages()` llama2 format writes [INST] and <<SYS>> as Meta does", () => {
  const tok = new ByteTokenizer();
  const { tokens } = tokenizeMessages(tok, conversation(), "llama2");
  strictEqual(
    tok.render(tokens),
    "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST] Hello!</s><s>[INST] 2+2? [/INST] 4</s>",
  );
});

Deno.test("`tokenizeMessages()` llama3 format writes headers, <|eot_id|> and strips content", () => {
  const tok = new ByteTokenizer({ specials: LLAMA3_SPECIALS });
  const msgs = conversation().slice(0, 3);
  msgs[1].content = ["  Hi there \n"];
  const { tokens } = tokenizeMessages(tok, msgs, "llama3");
  strictEqual(
    tok.render(tokens),
    "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|></s>",
  );
  // Header and end tokens are single special ids, not their text's bytes.
  strictEqual(tokens[1], tok.specialTokens.get("<|start_header_id|>"));
  strictEqual(tokens[tokens.length - 2], tok.specialTokens.get("<|eot_id|>"));
});

Deno.test("`tokenizeMessages()` llama3 generation prompt ends with the open assistant header", () => {
  const tok = new ByteTokenizer({ specials: LLAMA3_SPECIALS });
  const msgs = [textMessage("user", "Hi"), textMessage("assistant", "")];
  const { tokens } = tokenizeMessages(tok, msgs, "llama3", { addEnd: false });
  strictEqual(
    tok.render(tokens),
    "<s><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
  );
});

Deno.test("`tokenizeMessages()` chatml format closes the last answer with EOS (Qwen2.5)", () => {
  const tok = new ByteTokenizer({ specials: CHATML_SPECIALS, eos: "<|im_end|>" });
  const { tokens } = tokenizeMessages(tok, conversation(), "chatml");
  strictEqual(
    tok.render(tokens),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n" +
      "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n" +
      "<|im_start|>assistant\n4<|im_end|>",
  );
});

Deno.test("`tokenizeMessages()` writes no BOS when the tokenizer has none (bosId -1)", () => {
  const tok = new ByteTokenizer({ specials: CHATML_SPECIALS, eos: "<|im_end|>", noBos: true });
  const msgs = [textMessage("user", "Hi"), textMessage("assistant", "Yo")];
  const chatml = tokenizeMessages(tok, msgs, "chatml").tokens;
  strictEqual(
    tok.render(chatml),
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>",
  );
  const plain = tokenizeMessages(tok, msgs, "plain").tokens;
  strictEqual(tok.render(plain), "user: Hi\nassistant: Yo<|im_end|>");
  strictEqual(chatml.concat(plain).includes(-1), false);
});

Deno.test("`tokenizeMessages()` plain format writes role: content lines", () => {
  const tok = new ByteTokenizer();
  const { tokens } = tokenizeMessages(tok, conversation(), "plain");
  strictEqual(
    tok.render(tokens),
    "<s>system: Be brief.\nuser: Hi there\nassistant: Hello!</s><s>user: 2+2?\nassistant: 4</s>",
  );
});

Deno.test("`resolveChatFormat()` picks llama3/chatml from special tokens and torchtune names", () => {
  strictEqual(
    resolveChatFormat("auto", new ByteTokenizer({ specials: LLAMA3_SPECIALS }), "none"),
    "llama3",
  );
  strictEqual(
    resolveChatFormat("auto", new ByteTokenizer({ specials: CHATML_SPECIALS }), "none"),
    "chatml",
  );
  strictEqual(resolveChatFormat("auto", new ByteTokenizer(), "plain"), "plain");
  strictEqual(
    resolveChatFormat("torchtune.models.llama2.Llama2ChatTemplate", new ByteTokenizer(), "none"),
    "llama2",
  );
  throws(
    () => resolveChatFormat("vicuna", new ByteTokenizer(), "none"),
    /unknown dataset.chat_format "vicuna"/,
  );
  // A format whose special tokens the tokenizer lacks fails with one line naming the token.
  throws(
    () => tokenizeMessages(new ByteTokenizer(), conversation(), "llama3"),
    (e: Error) =>
      e instanceof TuneError && /<\|start_header_id\|>/.test(e.message) &&
      !e.message.includes("\n"),
  );
  deepStrictEqual(tokenizeMessages(new ByteTokenizer(), [], "none"), { tokens: [], mask: [] });
});
