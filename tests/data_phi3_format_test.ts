/**
 * Phi-3 Mini's tokenizer (torchtune.models.phi3.phi3_mini_tokenizer) and chat format
 * (torchtune's Phi3MiniTokenizer.tokenize_messages). Two independent checks, both exact:
 * - ids and masks equal those of tests/reference/phi3_reference.py, which runs torchtune's
 *   tokenize_messages algorithm with the sentencepiece library on Llama 2's tokenizer.model
 *   (Phi-3 Mini's tokenizer.model is that model; tests/data/tokenizers/llama2/);
 * - a conversation through the byte tokenizer of tests/data_byte_tokenizer_test.ts, whose
 *   expected text is written by hand from the format (see the test).
 */
import { deepStrictEqual as assertEquals, strictEqual, throws } from "node:assert";
import { join } from "node:path";
import "../src/tokenizers/components.ts";
import { findComponent } from "../src/config/registry.ts";
import { resolveChatFormat, tokenizeMessages } from "../src/data/chat_format.ts";
import type { Message, Role } from "../src/data/types.ts";
import { TuneError } from "../src/errors.ts";
import { promptTokens } from "../src/generation/prompt.ts";
import { PHI3_SPECIAL_TOKENS } from "../src/tokenizers/phi3.ts";
import type { Tokenizer } from "../src/tokenizers/types.ts";
import { ByteTokenizer } from "./data_byte_tokenizer_test.ts";

const SP_MODEL = new URL("./data/tokenizers/llama2/tokenizer.model", import.meta.url)
  .pathname;
const REFERENCE = new URL("./fixtures/data/phi3_reference.json", import.meta.url);

function phi3Tokenizer(extra: Record<string, unknown> = {}): Tokenizer {
  return findComponent("torchtune.models.phi3.phi3_mini_tokenizer")!.build({
    path: SP_MODEL,
    max_seq_len: null,
    prompt_template: null,
    special_tokens_path: null,
    ...extra,
  }) as Tokenizer;
}

function msg(role: Role, text: string, masked: boolean, eot = true): Message {
  return { role, content: [text], masked, eot };
}

function oneLine(part: string) {
  return (e: unknown) => {
    const m = (e as Error).message;
    if (!(e instanceof TuneError) || !m.includes(part) || m.includes("\n")) {
      throw new Error(`expected a one-line TuneError naming ${part}, got: ${m}`);
    }
    return true;
  };
}

Deno.test("`tokenizeMessages()` phi3 gives torchtune's ids and masks on Phi-3's SentencePiece model", () => {
  const tok = phi3Tokenizer();
  strictEqual(resolveChatFormat("auto", tok, "none"), "phi3");
  const ref = JSON.parse(Deno.readTextFileSync(REFERENCE)) as {
    newline: number[];
    cases: {
      name: string;
      messages: { role: Role; content: string; masked: boolean }[];
      add_end_tokens: boolean;
      max_seq_len: number | null;
      tokens: number[];
      mask: boolean[];
    }[];
  };
  assertEquals(tok.encode("\n", { bos: false }), ref.newline); // "▁" + "<0x0A>": [29871, 13]
  for (const c of ref.cases) {
    const messages = c.messages.map((m) => msg(m.role, m.content, m.masked));
    const got = tokenizeMessages(tok, messages, "phi3", {
      addEnd: c.add_end_tokens,
      maxSeqLen: c.max_seq_len,
    });
    assertEquals(got.tokens, c.tokens, `${c.name} tokens`);
    assertEquals(got.mask, c.mask, `${c.name} mask`);
    console.log(`${c.name}: ${got.tokens.length} ids equal the reference`);
  }
  // The same text with a trailing user message and max_seq_len above its length keeps its
  // last token (torchtune truncates only at the limit, so no EOS is forced in).
  const short = tokenizeMessages(tok, [msg("user", "Hi", true)], "phi3", { maxSeqLen: 100 });
  assertEquals(short.tokens.slice(-3), [32007, 29871, 13]);
});

Deno.test("`tokenizeMessages()` phi3 writes <|role|>\\n text <|end|>\\n, EOS after each assistant turn, BOS per turn", () => {
  // The byte tokenizer with a dummy prefix behaves like SentencePiece here: encode("\n") is
  // " \n" (torchtune encodes "\n" as is, so the space stays), and each message's content is
  // encoded after "\n" with that prefix dropped (trim_leading_whitespace), so it has no
  // leading space; trailing spaces are stripped ("Hi there " -> "Hi there"). EOS is
  // <|endoftext|>. torchtune's format, per message: [BOS if a turn starts] <|role|> "\n"
  // content <|end|> "\n", then after an assistant message <|endoftext|> and a new turn.
  const tok = new ByteTokenizer({
    specials: ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"],
    dummyPrefix: true,
    eos: "<|endoftext|>",
  });
  const messages = [
    msg("system", "Be brief.", true),
    msg("user", "Hi there ", true),
    msg("assistant", "Hello!", false),
    msg("user", "2+2?", true),
    msg("assistant", "4", false),
  ];
  strictEqual(resolveChatFormat("auto", tok, "none"), "phi3");
  const { tokens, mask } = tokenizeMessages(tok, messages, "phi3");
  const turn1 = "<s><|system|> \nBe brief.<|end|> \n<|user|> \nHi there<|end|> \n" +
    "<|assistant|> \nHello!<|end|> \n<|endoftext|>";
  const turn2 = "<s><|user|> \n2+2?<|end|> \n<|assistant|> \n4<|end|> \n<|endoftext|>";
  strictEqual(tok.render(tokens), turn1 + turn2);
  // Masks follow each message: system/user masked, assistant (with its EOS) trained on.
  const lens = [
    1 + 1 + 2 + 9 + 1 + 2, // <s> <|system|> " \n" "Be brief." <|end|> " \n"
    1 + 2 + 8 + 1 + 2, // <|user|> " \n" "Hi there" <|end|> " \n"
    1 + 2 + 6 + 1 + 2 + 1, // <|assistant|> " \n" "Hello!" <|end|> " \n" <|endoftext|>
    1 + 1 + 2 + 4 + 1 + 2, // <s> <|user|> " \n" "2+2?" <|end|> " \n"
    1 + 2 + 1 + 1 + 2 + 1, // <|assistant|> " \n" "4" <|end|> " \n" <|endoftext|>
  ];
  const want = lens.flatMap((n, i) => Array(n).fill(messages[i].masked));
  assertEquals(mask, want);
  // A generation prompt leaves the assistant's turn open, as Phi-3's add_generation_prompt.
  const prompt = promptTokens(tok, { system: "Be brief.", user: "Hi" }, {
    instructTemplate: null,
    chatFormat: "auto",
  });
  strictEqual(
    tok.render(prompt),
    "<s><|system|> \nBe brief.<|end|> \n<|user|> \nHi<|end|> \n<|assistant|> \n",
  );
  // Roles Phi-3 has no token for are refused in one line.
  throws(() => tokenizeMessages(tok, [msg("tool", "x", true)], "phi3"), oneLine("tool"));
});

Deno.test("phi3_mini_tokenizer has torchtune's special ids, EOS <|endoftext|> and skips 32000-32064 when decoding", () => {
  const tok = phi3Tokenizer({ max_seq_len: 64 });
  for (const [name, id] of Object.entries(PHI3_SPECIAL_TOKENS)) {
    strictEqual(tok.specialTokens!.get(name), id, name);
  }
  assertEquals([tok.bosId, tok.eosId, tok.padId, tok.vocabSize, tok.maxSeqLen], [
    1,
    32000,
    32000,
    32011,
    64,
  ]);
  assertEquals(tok.stopIds, [32000, 32001, 32007]);
  // torchtune's encode passes add_eos to SentencePiece: </s> (2), not <|endoftext|>.
  const ids = tok.encode("Hello world", { bos: true, eos: true });
  assertEquals(ids, [1, 15043, 3186, 2]);
  // Special-token text is plain text unless asked.
  strictEqual(tok.encode("<|end|>", { bos: false }).includes(32007), false);
  assertEquals(tok.encode("a<|end|>", { bos: false, parseSpecial: true }), [
    ...tok.encode("a", { bos: false }),
    32007,
  ]);
  strictEqual(tok.decode([32010, ...ids.slice(1, 3), 32007, 32040]), "Hello world");
  strictEqual(tok.decode([32010, 15043, 32007], { skipSpecial: false }), "<|user|>Hello<|end|>");
  // A plain Llama 2 SentencePiece tokenizer has no <|user|>: auto keeps its fallback.
  const llama2 = findComponent("torchtune.models.llama2.llama2_tokenizer")!.build({
    path: SP_MODEL,
    max_seq_len: null,
    prompt_template: null,
  }) as Tokenizer;
  strictEqual(resolveChatFormat("auto", llama2, "none"), "none");
});

Deno.test("phi3_mini_tokenizer reads special_tokens_path and refuses a non-SentencePiece file in one line", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const json = join(tmp, "tokenizer.json");
    const added = [
      { id: 0, content: "<unk>" },
      { id: 1, content: "<s>" },
      { id: 2, content: "</s>" },
      ...Object.entries(PHI3_SPECIAL_TOKENS).map(([content, id]) => ({ id, content })),
      { id: 32011, content: "<|extra|>" },
    ];
    Deno.writeTextFileSync(json, JSON.stringify({ added_tokens: added, model: {} }));
    const tok = phi3Tokenizer({ special_tokens_path: json });
    assertEquals([tok.specialTokens!.get("<|extra|>"), tok.vocabSize, tok.eosId], [
      32011,
      32012,
      32000,
    ]);
    throws(() => phi3Tokenizer({ path: json }), oneLine("not a SentencePiece model"));
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
