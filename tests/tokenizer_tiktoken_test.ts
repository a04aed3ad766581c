/**
 * tiktoken-format byte-level BPE with Llama 3's special tokens and pre-tokenization regex, on a
 * small rank file built here (256 single bytes + 18 merges). Expected ids are derived by hand
 * in the comments, and random unicode text is checked against a naive O(n^2) transcription of
 * tiktoken's `_byte_pair_merge`. Token ids are compared exactly.
 */
import { deepStrictEqual as assertEquals, strictEqual as assertStrictEquals } from "node:assert";
import { loadTokenizer } from "../src/tokenizers/mod.ts";
import type { TiktokenTokenizer } from "../src/tokenizers/tiktoken.ts";

const enc = new TextEncoder();
/** Tokens after the 256 single bytes (rank 0-255 = byte value), in rank order from 256. */
const MERGED: (string | number[])[] = [
  "he", // 256
  "ll", // 257
  "hell", // 258
  "hello", // 259
  " w", // 260
  "or", // 261
  " wor", // 262
  "ld", // 263
  " world", // 264
  "é", // 265 (C3 A9)
  "ca", // 266
  "caf", // 267
  "café", // 268
  "12", // 269
  "123", // 270
  "\n\n", // 271
  "aa", // 272
  "xyz", // 273: not reachable by merges, only by tiktoken's whole-piece lookup
];
const BASE = 256 + MERGED.length; // 274: <|begin_of_text|> and the other specials follow

function tokenBytes(): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let b = 0; b < 256; b++) out.push(new Uint8Array([b]));
  for (const t of MERGED) out.push(typeof t === "string" ? enc.encode(t) : new Uint8Array(t));
  return out;
}

function b64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

/** Write the rank file to a temp dir; returns its path. */
function writeRankFile(): string {
  const dir = Deno.makeTempDirSync({ prefix: "tune_tiktoken_" });
  const path = `${dir}/tokenizer.model`;
  Deno.writeTextFileSync(
    path,
    tokenBytes().map((t, rank) => `${b64(t)} ${rank}`).join("\n") + "\n",
  );
  return path;
}

const path = writeRankFile();
const tok = loadTokenizer(path) as TiktokenTokenizer;
Deno.removeSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });

Deno.test("loadTokenizer() detects a tiktoken file and places Llama 3's 256 specials after the ranks", () => {
  assertEquals(tok.constructor.name, "TiktokenTokenizer");
  assertEquals(tok.baseVocabSize, BASE);
  assertEquals(tok.vocabSize, BASE + 256);
  assertEquals([tok.bosId, tok.eosId, tok.padId], [BASE, BASE + 1, BASE + 4]);
  // eos <|end_of_text|>, <|eot_id|> (offset 9), <|eom_id|> (offset 8)
  assertEquals(tok.stopIds, [BASE + 1, BASE + 9, BASE + 8]);
  assertEquals(tok.specialTokens.get("<|start_header_id|>"), BASE + 6);
  assertEquals(tok.specialTokens.get("<|reserved_special_token_2|>"), BASE + 13);
  assertEquals(tok.specialTokens.get("<|reserved_special_token_244|>"), BASE + 255);
  // torchtune's table (LLAMA3_SPECIAL_TOKENS, read from its source): <|reserved_special_token_245|>
  // 128011, <|video|> 128012, <|image|> 128256 (past the 128256 text rows; not in vocabSize)
  assertEquals(tok.specialTokens.get("<|reserved_special_token_245|>"), BASE + 11);
  assertEquals(tok.specialTokens.get("<|video|>"), BASE + 12);
  assertEquals(tok.specialTokens.get("<|image|>"), BASE + 256);
  assertEquals(tok.specialTokens.size, 257);
});

Deno.test("encode() merges by rank after Llama 3's pre-tokenization (hand-derived ids)", () => {
  const e = (t: string) => tok.encode(t, { bos: false });
  // "hello" is a rank itself; " world" (space joins the letters) too
  assertEquals(e("hello world"), [259, 264]);
  // two spaces: "\s+(?!\S)" takes the first one alone, " world" the second
  assertEquals(e("hello  world"), [259, 32, 264]);
  // letters incl. é form one piece "café" (a rank); " " alone (the digit after it is \S);
  // "123"; "\n\n"; "xyz" found whole although no merge reaches it
  assertEquals(e("café 123\n\nxyz"), [268, 32, 270, 271, 273]);
  // digits come in groups of at most three: "123" "4"
  assertEquals(e("1234"), [270, 52]);
  // "xyzx" is not a rank and no merge applies: four single bytes
  assertEquals(e("xyzx"), [120, 121, 122, 120]);
  // ties go to the leftmost pair: aaa -> aa a, aaaa -> aa aa
  assertEquals(e("aaa"), [272, 97]);
  assertEquals(e("aaaa"), [272, 272]);
  // case-insensitive contractions split off: "it" "'s" " IT" "'S"
  assertEquals(e("it's IT'S"), [105, 116, 39, 115, 32, 73, 84, 39, 83]);
  // "hell" inside "shell": s h e l l -> he(256) ll(257) -> hell(258)
  assertEquals(e("shell"), [115, 258]);
  // an emoji without merges is its four UTF-8 bytes
  assertEquals(e("🙂"), [0xf0, 0x9f, 0x99, 0x82]);
  assertEquals(e(""), []);
});

Deno.test("encode() adds BOS/EOS and reads special-token text only with parseSpecial", () => {
  assertEquals(tok.encode("hello", { bos: true, eos: true }), [BASE, 259, BASE + 1]);
  assertEquals(tok.encode("hello"), [BASE, 259]);
  const text = "<|start_header_id|>hello<|end_header_id|>\n\n<|eot_id|>";
  assertEquals(tok.encode(text, { bos: false, parseSpecial: true }), [
    BASE + 6,
    259,
    BASE + 7,
    271,
    BASE + 9,
  ]);
  // default: special text is plain text (torchtune's Llama 3 encodes it so), no special ids
  const plain = tok.encode(text, { bos: false });
  assertEquals(plain.every((id) => id < BASE), true);
  assertStrictEquals(tok.decode(plain, { skipSpecial: false }), text);
  // skipping specials removes `<|...|>` text too, as torchtune's regex does
  assertStrictEquals(tok.decode(plain), "");
});

Deno.test("decode() drops whole Llama 3 headers with the special tokens, as torchtune's Llama3Tokenizer", () => {
  // torchtune (llama3/_tokenizer.py, read from source): decode writes the special tokens out,
  // removes each `<|start_header_id|>.*?<|end_header_id|>\n\n`, then every `<|.*?|>`.
  const sp = (name: string) => tok.specialTokens.get(name)!;
  const e = (t: string) => tok.encode(t, { bos: false });
  const ids = [
    tok.bosId,
    sp("<|start_header_id|>"),
    ...e("user"),
    sp("<|end_header_id|>"),
    ...e("\n\nhello"),
    sp("<|eot_id|>"),
    sp("<|start_header_id|>"),
    ...e("assistant"),
    sp("<|end_header_id|>"),
    ...e("\n\nworld"),
    sp("<|eot_id|>"),
  ];
  assertStrictEquals(tok.decode(ids), "helloworld");
  assertStrictEquals(
    tok.decode(ids, { skipSpecial: false }),
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\nworld<|eot_id|>",
  );
});

Deno.test("decode() drops special tokens by default and keeps them with skipSpecial=false", () => {
  const ids = [BASE, BASE + 6, 259, BASE + 7, 264, BASE + 9];
  assertStrictEquals(tok.decode(ids), "hello world");
  assertStrictEquals(
    tok.decode(ids, { skipSpecial: false }),
    "<|begin_of_text|><|start_header_id|>hello<|end_header_id|> world<|eot_id|>",
  );
  // a split multi-byte character decodes to U+FFFD
  assertStrictEquals(tok.decode([0xc3]), "\ufffd");
});

/** Naive tiktoken: regex pieces, whole-piece lookup, then repeated leftmost-minimum merges. */
function naiveEncode(text: string): number[] {
  const ranks = new Map<string, number>();
  tokenBytes().forEach((t, r) => ranks.set(String.fromCharCode(...t), r));
  // Llama 3's pattern transcribed with \p{White_Space} for \s (RegExp(): the linter lacks (?i:))
  const re = new RegExp(
    String
      .raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\p{White_Space}\p{L}\p{N}]+[\r\n]*|\p{White_Space}*[\r\n]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+`,
    "gu",
  );
  const out: number[] = [];
  for (const m of text.matchAll(re)) {
    const parts = [...enc.encode(m[0])].map((b) => String.fromCharCode(b));
    const whole = ranks.get(parts.join(""));
    if (whole !== undefined) {
      out.push(whole);
      continue;
    }
    for (;;) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < parts.length; i++) {
        const r = ranks.get(parts[i] + parts[i + 1]);
        if (r !== undefined && r < bestRank) [best, bestRank] = [i, r];
      }
      if (best < 0) break;
      parts.splice(best, 2, parts[best] + parts[best + 1]);
    }
    for (const p of parts) out.push(ranks.get(p)!);
  }
  return out;
}

/** Deterministic pseudo-random unicode text (LCG), mixing ASCII, accents, CJK, emoji, whitespace. */
function randomTexts(n: number, seed: number): string[] {
  let s = seed;
  const next = (k: number) => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s % k;
  };
  const alphabet = [..."hello world café 123 aaa xyz IT'S \n\n\t  é東京🙂👩‍👧 Привет ?!.,-_\r\n"];
  return Array.from({ length: n }, () => {
    let t = "";
    const len = 1 + next(60);
    for (let i = 0; i < len; i++) t += alphabet[next(alphabet.length)];
    return t;
  });
}

Deno.test("encode() equals a naive tiktoken merge loop and round-trips random unicode text", () => {
  for (const text of randomTexts(300, 7)) {
    const ids = tok.encode(text, { bos: false });
    assertEquals(ids, naiveEncode(text), JSON.stringify(text));
    assertStrictEquals(tok.decode(ids), text);
  }
});

Deno.test("encode() equals the tiktoken library (tests/fixtures/tokenizer_bpe_cases.json)", () => {
  // made by tests/reference/tokenizer_bpe_reference.py with tiktoken 0.14.0
  const ref = JSON.parse(
    Deno.readTextFileSync(new URL("./fixtures/tokenizer_bpe_cases.json", import.meta.url)),
  ).tiktoken;
  const dir = Deno.makeTempDirSync({ prefix: "tune_tiktoken_ref_" });
  try {
    Deno.writeTextFileSync(`${dir}/tokenizer.model`, ref.rank_file);
    const names = [
      "<|begin_of_text|>",
      "<|end_of_text|>",
      "<|start_header_id|>",
      "<|end_header_id|>",
      "<|eot_id|>",
    ];
    const n = ref.rank_file.trim().split("\n").length; // the ranks are 0..n-1
    const specialTokens = new Map(names.map((name, i) => [name, n + i]));
    const t = loadTokenizer(`${dir}/tokenizer.model`, { tiktoken: { specialTokens } });
    assertEquals(ref.cases.length > 50, true);
    for (const c of ref.cases) {
      const label = JSON.stringify(c.text);
      assertEquals(t.encode(c.text, { bos: false }), c.ids, label);
      assertEquals(
        t.encode(c.text, { bos: false, parseSpecial: true }),
        c.ids_special ?? c.ids,
        label,
      );
      assertStrictEquals(t.decode(c.ids, { skipSpecial: false }), c.text, label);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
