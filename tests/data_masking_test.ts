/**
 * Prompt masking, truncation, text-completion labels and packing, checked token by token.
 * Byte tokenizer ids: BOS 1, EOS 2, byte b -> b + 3 ('a' = 100, 'b' = 101, ...).
 * Labels are shifted: labels[t] is the target of tokens[t]. Tolerance: exact.
 */
import { deepStrictEqual, throws } from "node:assert";
import {
  alpacaToMessages,
  IGNORE_INDEX as X,
  maskMessages,
  packSamples,
  type Sample,
  sampleFromMask,
  textCompletionSample,
  textMessage,
  tokenizeMessages,
} from "../src/data/mod.ts";
import { ByteTokenizer, LLAMA3_SPECIALS } from "./data_byte_tokenizer_test.ts";

const tok = new ByteTokenizer();
const arr = (a: Int32Array | undefined) => Array.from(a ?? []);

function userAssistant(trainOnInput: boolean) {
  const msgs = [textMessage("user", "ab"), textMessage("assistant", "cd")];
  maskMessages(msgs, trainOnInput ? "train_on_all" : "train_on_assistant");
  return msgs;
}

Deno.test("`sampleFromMask()` masks prompt tokens with -100 when train_on_input is false", () => {
  const { tokens, mask } = tokenizeMessages(tok, userAssistant(false), "none");
  deepStrictEqual(tokens, [1, 100, 101, 102, 103, 2]);
  deepStrictEqual(mask, [true, true, true, false, false, false]);
  const s = sampleFromMask(tokens, mask);
  deepStrictEqual(arr(s.tokens), [1, 100, 101, 102, 103, 2]);
  // BOS->a, a->b are prompt targets (masked); b->c, c->d, d->EOS are trained; last is -100.
  deepStrictEqual(arr(s.labels), [X, X, 102, 103, 2, X]);
});

Deno.test("`sampleFromMask()` trains on every next token when train_on_input is true", () => {
  const { tokens, mask } = tokenizeMessages(tok, userAssistant(true), "none");
  deepStrictEqual(arr(sampleFromMask(tokens, mask).labels), [100, 101, 102, 103, 2, X]);
});

Deno.test("`alpacaToMessages()` masks exactly the Alpaca prompt when train_on_input is false", () => {
  const msgs = alpacaToMessages({ instruction: "i", input: "", output: "o" }, {
    source: "t",
    index: 0,
  }, { trainOnInput: false });
  const { tokens, mask } = tokenizeMessages(tok, msgs, "none");
  const s = sampleFromMask(tokens, mask);
  const T = tokens.length;
  // Only the last two targets are trained: prompt end -> 'o' (114), 'o' -> EOS.
  deepStrictEqual(arr(s.labels).slice(T - 3), [114, 2, X]);
  deepStrictEqual(arr(s.labels).slice(0, T - 3).every((l) => l === X), true);
});

Deno.test("`tokenizeMessages()` truncates to max_seq_len and forces EOS last (torchtune)", () => {
  const { tokens, mask } = tokenizeMessages(tok, userAssistant(false), "none", { maxSeqLen: 4 });
  deepStrictEqual(tokens, [1, 100, 101, 2]);
  deepStrictEqual(mask, [true, true, true, false]);
  deepStrictEqual(arr(sampleFromMask(tokens, mask).labels), [X, X, 2, X]);
});

Deno.test("`tokenizeMessages()` llama3 trains the assistant header and eot but not EOS", () => {
  const t3 = new ByteTokenizer({ specials: LLAMA3_SPECIALS });
  const [SH, EH, EOT] = [259, 260, 261];
  const { tokens, mask } = tokenizeMessages(t3, userAssistant(false), "llama3");
  const bytes = (s: string) => [...s].map((c) => c.charCodeAt(0) + 3);
  const user = [SH, ...bytes("user"), EH, 13, 13, 100, 101, EOT];
  const asst = [SH, ...bytes("assistant"), EH, 13, 13, 102, 103, EOT];
  deepStrictEqual(tokens, [1, ...user, ...asst, 2]);
  const s = sampleFromMask(tokens, mask);
  const expected = [X, ...user.map(() => X)]; // targets of BOS..second-to-last user token
  expected[expected.length - 1] = SH; // user EOT -> assistant header is trained
  expected.push(...asst.slice(1), X); // every assistant token after it; EOT -> EOS masked
  expected.push(X); // last position
  deepStrictEqual(arr(s.labels), expected);
});

Deno.test("`maskMessages()` train_on_last trains only the final assistant message", () => {
  const msgs = [
    textMessage("system", "s"),
    textMessage("user", "u"),
    textMessage("assistant", "a"),
    textMessage("user", "v"),
    textMessage("assistant", "b"),
  ];
  maskMessages(msgs, "train_on_last");
  deepStrictEqual(msgs.map((m) => m.masked), [true, true, true, true, false]);
  maskMessages(msgs, "train_on_all");
  deepStrictEqual(msgs.map((m) => m.masked), [true, false, false, false, false]);
});

Deno.test("`textCompletionSample()` adds BOS/EOS and truncates to max_seq_len - 1", () => {
  const s = textCompletionSample(tok, "abc", { addEos: true, maxSeqLen: null });
  deepStrictEqual(arr(s.tokens), [1, 100, 101, 102, 2]);
  deepStrictEqual(arr(s.labels), [100, 101, 102, 2, X]);
  const t = textCompletionSample(tok, "abc", { addEos: true, maxSeqLen: 4 });
  deepStrictEqual(arr(t.tokens), [1, 100, 101]);
  deepStrictEqual(arr(t.labels), [100, 101, X]);
  const n = textCompletionSample(tok, "ab", { addEos: false, maxSeqLen: null });
  deepStrictEqual(arr(n.tokens), [1, 100, 101]);
});

function samples(): Sample[] {
  const all = (n: number) => new Array(n).fill(false);
  return [
    sampleFromMask([1, 10, 11, 2], all(4)),
    sampleFromMask([1, 20, 2], all(3)),
    sampleFromMask([1, 30, 31, 32, 2], all(5)),
  ];
}

Deno.test("`packSamples()` concatenates whole samples and masks labels across boundaries", () => {
  const packs = packSamples(samples(), { maxSeqLen: 8, padId: 0 });
  deepStrictEqual(packs.length, 2);
  deepStrictEqual(arr(packs[0].tokens), [1, 10, 11, 2, 1, 20, 2, 0]);
  // Position 3 (EOS of sample 1) does not target sample 2's BOS.
  deepStrictEqual(arr(packs[0].labels), [10, 11, 2, X, 20, 2, X, X]);
  deepStrictEqual(arr(packs[0].inputPos), [0, 1, 2, 3, 0, 1, 2, 3]);
  deepStrictEqual(arr(packs[0].seqLens), [4, 3, 1]);
  deepStrictEqual(arr(packs[1].tokens), [1, 30, 31, 32, 2, 0, 0, 0]);
  deepStrictEqual(arr(packs[1].labels), [30, 31, 32, 2, X, X, X, X]);
  deepStrictEqual(arr(packs[1].inputPos), [0, 1, 2, 3, 4, 5, 6, 7]);
  deepStrictEqual(arr(packs[1].seqLens), [5, 3]);
});

Deno.test("`packSamples()` splits a sample across packs when split_across_pack is true", () => {
  const packs = packSamples(samples(), { maxSeqLen: 8, padId: 0, splitAcrossPack: true });
  deepStrictEqual(packs.length, 2);
  deepStrictEqual(arr(packs[0].tokens), [1, 10, 11, 2, 1, 20, 2, 1]);
  deepStrictEqual(arr(packs[0].labels), [10, 11, 2, X, 20, 2, X, 30]);
  deepStrictEqual(arr(packs[0].inputPos), [0, 1, 2, 3, 0, 1, 2, 0]);
  deepStrictEqual(arr(packs[0].seqLens), [4, 3, 1]);
  deepStrictEqual(arr(packs[1].tokens), [30, 31, 32, 2, 0, 0, 0, 0]);
  deepStrictEqual(arr(packs[1].labels), [31, 32, 2, X, X, X, X, X]);
  deepStrictEqual(arr(packs[1].inputPos), [1, 2, 3, 4, 5, 6, 7, 7]); // padding clamped to T - 1
  deepStrictEqual(arr(packs[1].seqLens), [4, 4]);
});

Deno.test("`packSamples()` rejects a too-long sample unless it may split", () => {
  throws(
    () => packSamples(samples(), { maxSeqLen: 4, padId: 0 }),
    /sample 2 is too long to pack \(5 > 4/,
  );
  const packs = packSamples(samples(), { maxSeqLen: 4, padId: 0, splitAcrossPack: true });
  deepStrictEqual(packs.map((p) => arr(p.tokens)), [[1, 10, 11, 2], [1, 20, 2, 1], [
    30,
    31,
    32,
    2,
  ]]);
  deepStrictEqual(packs.map((p) => arr(p.seqLens)), [[4], [3, 1], [4]]);
});
