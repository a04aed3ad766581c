/**
 * The llama3 chat format with src/tokenizers' real tiktoken tokenizer class and Llama 3's
 * special-token table, on a byte-level rank file (256 single-byte tokens, no merges; the
 * real Llama 3 file is not in tests/data). Checks that "auto" finds the format from the
 * tokenizer's specialTokens and that headers/ends are the special ids Llama 3 uses
 * (base vocabulary + offset, as torchtune's LLAMA3_SPECIAL_TOKENS). Tolerance: exact.
 */
import { deepStrictEqual, strictEqual } from "node:assert";
import { resolveChatFormat, textMessage, tokenizeMessages } from "../src/data/mod.ts";
import { parseTiktoken, TiktokenTokenizer } from "../src/tokenizers/tiktoken.ts";

function byteLevelTiktoken(): TiktokenTokenizer {
  const lines = Array.from({ length: 256 }, (_, b) => `${btoa(String.fromCharCode(b))} ${b}`);
  return new TiktokenTokenizer(parseTiktoken(lines.join("\n"), "bytes.tiktoken"), "bytes.tiktoken");
}

Deno.test("`tokenizeMessages()` llama3 format uses the tiktoken tokenizer's special ids", () => {
  const tok = byteLevelTiktoken();
  strictEqual(resolveChatFormat("auto", tok, "none"), "llama3");
  const msgs = [
    textMessage("system", "Be brief.", { masked: true }),
    textMessage("user", "Hi", { masked: true }),
    textMessage("assistant", "Yo"),
  ];
  const { tokens, mask } = tokenizeMessages(tok, msgs, "llama3");
  strictEqual(
    tok.decode(tokens, { skipSpecial: false }),
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|><|end_of_text|>",
  );
  // Llama 3's ids relative to the base vocabulary: 256 + offset in the special table.
  const [BOT, EOT_TEXT, SH, EH, EOT] = [256, 257, 262, 263, 265];
  strictEqual(tokens[0], BOT);
  strictEqual(tokens[1], SH);
  strictEqual(tokens[2 + "system".length], EH);
  strictEqual(tokens.at(-2), EOT);
  strictEqual(tokens.at(-1), EOT_TEXT);
  // Trained positions: the assistant message (header included) only.
  const asstStart = tokens.lastIndexOf(SH);
  deepStrictEqual(
    mask.map((m, i) => !m && i),
    mask.map((_, i) => i >= asstStart && i < tokens.length - 1 && i),
  );
});
