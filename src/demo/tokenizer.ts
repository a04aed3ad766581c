/**
 * The demo's tokenizer, written as a real llama2.c `tokenizer.bin` (so `tune run generate`
 * and llama2.c's run.c read it like any other): <unk>, <s>, </s>, one piece per printable
 * ASCII character and newline, and the fixed text of the Alpaca prompt as merge chains
 * (every prefix of each fixed phrase is a piece whose score is its length, so SentencePiece
 * BPE merges a whole phrase into one token). Task words stay one token per letter, which is
 * what makes letter-level tasks (copy, reverse) learnable by a tiny model; the prompt costs
 * a handful of tokens instead of ~200.
 */
import { ALPACA_PROMPT_INPUT } from "../data/messages.ts";

/** Fixed phrases of the demo's Alpaca prompts, as they appear after the dummy-prefix space. */
export function demoPhrases(instructions: readonly string[]): string[] {
  const [head, rest] = ALPACA_PROMPT_INPUT.split("{instruction}");
  const [mid, tail] = rest.split("{input}");
  // " " + head: SentencePiece prepends a space to the text (dummy prefix)
  return [" " + head, mid, tail, ...instructions];
}

/** The pieces of the demo vocabulary, in id order, with their scores. */
export function demoVocabulary(
  instructions: readonly string[],
): { piece: string; score: number }[] {
  const out: { piece: string; score: number }[] = [
    { piece: "<unk>", score: 0 },
    { piece: "\n<s>\n", score: 0 },
    { piece: "\n</s>\n", score: 0 },
  ];
  const seen = new Set<string>(["<unk>", "\n<s>\n", "\n</s>\n"]);
  const add = (piece: string, score: number) => {
    if (seen.has(piece)) return;
    seen.add(piece);
    out.push({ piece, score });
  };
  add("\n", 0);
  for (let c = 0x20; c < 0x7f; c++) add(String.fromCharCode(c), 0);
  for (const phrase of demoPhrases(instructions)) {
    for (let k = 2; k <= phrase.length; k++) add(phrase.slice(0, k), k);
  }
  return out;
}

/** `tokenizer.bin` bytes in llama2.c's layout (int32 max length, then score, length, bytes). */
export function demoTokenizerBytes(instructions: readonly string[]): Uint8Array {
  const enc = new TextEncoder();
  const vocab = demoVocabulary(instructions).map((v) => ({ ...v, bytes: enc.encode(v.piece) }));
  const maxLen = vocab.reduce((m, v) => Math.max(m, v.bytes.length), 0);
  const size = 4 + vocab.reduce((n, v) => n + 8 + v.bytes.length, 0);
  const buf = new Uint8Array(size);
  const view = new DataView(buf.buffer);
  view.setInt32(0, maxLen, true);
  let pos = 4;
  for (const v of vocab) {
    view.setFloat32(pos, v.score, true);
    view.setInt32(pos + 4, v.bytes.length, true);
    buf.set(v.bytes, pos + 8);
    pos += 8 + v.bytes.length;
  }
  return buf;
}
