/**
 * Generation: the `generate` recipe through the CLI against aidreams260K's PyTorch-made
 * greedy reference (exact token ids and text), the sampling filters against hand-computed
 * distributions (atol 1e-12 on float64 probabilities), seeded reproducibility, top_k=1 =
 * greedy, KV cache on = off, streaming detokenization and prompt templates.
 */
import {
  deepStrictEqual as assertEquals,
  notDeepStrictEqual as assertNotEquals,
  ok as assert,
} from "node:assert/strict";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { readLlama2c } from "../src/checkpoint/llama2c.ts";
import { tokenizeMessages } from "../src/data/chat_format.ts";
import { alpacaPrompt } from "../src/data/messages.ts";
import {
  drawFrom,
  generateTokens,
  promptTokens,
  sampleToken,
  samplingDistribution,
  TextStream,
} from "../src/generation/mod.ts";
import { createLlama, type LlamaModel } from "../src/models/llama/model.ts";
import { SeededRandom } from "../src/params/random.ts";
import { loadTokenizer } from "../src/tokenizers/load.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MODEL_DIR = new URL("./data/models/aidreams260K/", import.meta.url).pathname;
const LLAMA2_TOKENIZER = new URL(
  "./data/tokenizers/llama2/tokenizer.model",
  import.meta.url,
).pathname;

interface GreedyReference {
  prompt_ids: number[];
  max_new_tokens: number;
  ids: number[];
  text: string;
}

function greedyReference(): GreedyReference {
  const lines = Deno.readTextFileSync(MODEL_DIR + "reference.jsonl").trim().split("\n");
  return lines.map((l) => JSON.parse(l)).find((r) => r.case === "greedy");
}

function aidreams(): { model: LlamaModel; be: CpuBackend } {
  const be = new CpuBackend();
  const m = readLlama2c(MODEL_DIR + "model.bin");
  const model = createLlama(be, { name: "aidreams260K", config: m.config, lora: null }, {
    batch: 1,
    seqLen: 1,
  });
  model.loadStateDict(m.stateDict);
  return { model, be };
}

async function tune(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("tune run generate prints exactly aidreams260K's greedy reference on stdout", async () => {
  const ref = greedyReference();
  const r = await tune([
    "run",
    "generate",
    "--config",
    "llama2c/generate",
    `checkpointer.checkpoint_dir=${MODEL_DIR}`,
    "checkpointer.checkpoint_files=[model.bin]",
    `tokenizer.path=${MODEL_DIR}tokenizer.bin`,
    "prompt=",
    `max_new_tokens=${ref.max_new_tokens}`,
    "temperature=0",
  ]);
  assertEquals(r.code, 0, r.stderr);
  // stdout holds the generated text and a closing newline, nothing else
  assertEquals(r.stdout, `${ref.text}\n`);
  assert(/tokens\/s/.test(r.stderr), r.stderr);
});

Deno.test("tune alpaca_generate (torchtune's early form) runs generate on the given files", async () => {
  const ref = greedyReference();
  const r = await tune([
    "alpaca_generate",
    "--config",
    "llama2c/generate",
    "--native-checkpoint-path",
    `${MODEL_DIR}model.bin`,
    "--tokenizer-path",
    `${MODEL_DIR}tokenizer.bin`,
    "--input",
    "",
    "--max_new_tokens",
    "20",
  ]);
  assertEquals(r.code, 0, r.stderr);
  const tok = loadTokenizer(MODEL_DIR + "tokenizer.bin");
  assertEquals(r.stdout, `${tok.decode(ref.ids.slice(1, 21))}\n`);
});

Deno.test("tune run generate with a bad top_p is a one-line error", async () => {
  const r = await tune([
    "run",
    "generate",
    "--config",
    "llama2c/generate",
    `checkpointer.checkpoint_dir=${MODEL_DIR}`,
    "top_p=1.5",
    "temperature=1",
  ]);
  assertNotEquals(r.code, 0);
  assertEquals(r.stdout, "");
  assert(/bad value for 'top_p': 1.5 must be in \(0, 1\]/.test(r.stderr), r.stderr);
  assert(!/\n\s+at /.test(r.stderr), "no stack trace");
});

Deno.test("generateTokens() greedy from BOS gives the reference ids, with and without KV cache", () => {
  const ref = greedyReference();
  const { model, be } = aidreams();
  for (const kvCache of [true, false]) {
    const r = generateTokens(model, be, [ref.prompt_ids], {
      temperature: 0,
      topK: null,
      topP: null,
      maxNewTokens: ref.max_new_tokens,
      stopIds: [2],
      rng: new SeededRandom(0),
      kvCache,
    });
    assertEquals(r.tokens[0], ref.ids.slice(ref.prompt_ids.length), `kvCache=${kvCache}`);
    assertEquals(r.finish[0], "length");
  }
  model.free();
});

Deno.test("generateTokens() with top_k=1 equals greedy at any temperature", () => {
  const { model, be } = aidreams();
  const run = (temperature: number, topK: number | null) =>
    generateTokens(model, be, [[1, 400, 300]], {
      temperature,
      topK,
      topP: null,
      maxNewTokens: 30,
      stopIds: [2],
      rng: new SeededRandom(7),
    }).tokens[0];
  const greedy = run(0, null);
  assertEquals(run(1.5, 1), greedy);
  assertEquals(run(0.3, 1), greedy);
  model.free();
});

Deno.test("generateTokens() sampling repeats for a seed and differs for another", () => {
  const { model, be } = aidreams();
  const run = (seed: number) =>
    generateTokens(model, be, [[1]], {
      temperature: 1,
      topK: null,
      topP: 0.95,
      maxNewTokens: 40,
      stopIds: [],
      rng: new SeededRandom(seed),
    }).tokens[0];
  const a = run(1234);
  assertEquals(run(1234), a);
  assertNotEquals(run(4321), a);
  // a batch of two equal prompts draws each row in turn from one generator
  const batch = generateTokens(model, be, [[1], [1]], {
    temperature: 1,
    topK: null,
    topP: 0.95,
    maxNewTokens: 5,
    stopIds: [],
    rng: new SeededRandom(1234),
  });
  assertEquals(batch.tokens.length, 2);
  model.free();
});

Deno.test("generateTokens() stops at a stop token and leaves it out", () => {
  const ref = greedyReference();
  const { model, be } = aidreams();
  const stop = ref.ids[6]; // the 6th generated token
  const r = generateTokens(model, be, [[1]], {
    temperature: 0,
    topK: null,
    topP: null,
    maxNewTokens: 50,
    stopIds: [stop],
    rng: new SeededRandom(0),
  });
  assertEquals(r.tokens[0], ref.ids.slice(1, ref.ids.indexOf(stop)));
  assertEquals(r.finish[0], "stop");
  model.free();
});

const close = (a: ArrayLike<number>, b: number[], atol = 1e-12) => {
  assertEquals(a.length, b.length);
  for (let i = 0; i < b.length; i++) {
    assert(Math.abs(a[i] - b[i]) <= atol, `[${i}] ${a[i]} vs ${b[i]}`);
  }
};

Deno.test("samplingDistribution() applies top_p to a hand-computed distribution", () => {
  const p = [0.05, 0.5, 0.1, 0.2, 0.15];
  const logits = Float32Array.from(p, Math.log);
  // softmax gives p back (float32 logits: atol 1e-7)
  close(samplingDistribution(logits, { temperature: 1, topK: null, topP: null }), p, 1e-7);
  // top_p 0.8: 0.5 + 0.2 = 0.7 < 0.8, so 0.15 joins; mass 0.85 reached: the rest go
  const nucleus = [0, 0.5 / 0.85, 0, 0.2 / 0.85, 0.15 / 0.85];
  close(samplingDistribution(logits, { temperature: 1, topK: null, topP: 0.8 }), nucleus, 1e-7);
  // top_p exactly at a boundary: 0.5 + 0.2 = 0.7 >= 0.7 keeps two
  close(
    samplingDistribution(logits, { temperature: 1, topK: null, topP: 0.7 }),
    [0, 0.5 / 0.7, 0, 0.2 / 0.7, 0],
    1e-6,
  );
  // tiny top_p keeps the most likely token only
  close(samplingDistribution(logits, { temperature: 1, topK: null, topP: 0.01 }), [
    0,
    1,
    0,
    0,
    0,
  ]);
});

Deno.test("samplingDistribution() applies temperature then top_k", () => {
  const logits = Float32Array.of(2, 0, 1, -1);
  // T = 2: softmax([1, 0, 0.5, -0.5]) restricted to the 2 largest
  const e = [Math.exp(1), Math.exp(0.5)];
  const z = e[0] + e[1];
  close(samplingDistribution(logits, { temperature: 2, topK: 2, topP: null }), [
    e[0] / z,
    0,
    e[1] / z,
    0,
  ]);
  // top_k then top_p: of {0.73, 0.27} top_p 0.5 keeps the first
  close(samplingDistribution(logits, { temperature: 2, topK: 2, topP: 0.5 }), [1, 0, 0, 0]);
});

Deno.test("drawFrom() frequencies follow the distribution (20000 seeded draws, atol 0.01)", () => {
  const probs = Float64Array.of(0.1, 0, 0.6, 0.3);
  const rng = new SeededRandom(99);
  const counts = [0, 0, 0, 0];
  const n = 20000;
  for (let i = 0; i < n; i++) counts[drawFrom(probs, rng)]++;
  close(counts.map((c) => c / n), [0.1, 0, 0.6, 0.3], 0.01);
  assertEquals(counts[1], 0);
});

Deno.test("sampleToken() with temperature 0 is the first argmax", () => {
  const rng = new SeededRandom(1);
  assertEquals(
    sampleToken(Float32Array.of(0, 3, 3, 1), { temperature: 0, topK: 5, topP: 0.1 }, rng),
    1,
  );
});

Deno.test("TextStream pieces join to the decoded continuation (byte fallback, dummy prefix)", () => {
  const tok = loadTokenizer(LLAMA2_TOKENIZER);
  const prompt = tok.encode("Hello", { bos: true });
  const gen = tok.encode(" wörld 🦙 naïve\ttext", { bos: false }).slice(0);
  const stream = new TextStream(tok, prompt);
  let out = "";
  for (const id of gen) {
    const piece = stream.push(id);
    assert(!piece.includes("\uFFFD"), `incomplete character emitted: ${JSON.stringify(piece)}`);
    out += piece;
  }
  out += stream.flush();
  const full = tok.decode([...prompt, ...gen]);
  assertEquals("Hello" + out, full);
  // from BOS alone, the continuation drops SentencePiece's leading space like decode()
  const s2 = new TextStream(tok, [tok.bosId]);
  let t2 = "";
  for (const id of tok.encode("Once upon", { bos: false })) t2 += s2.push(id);
  assertEquals(t2 + s2.flush(), "Once upon");
  // random ids (byte-fallback tokens among them, so broken characters too): the windowed
  // pieces still join to the whole decode
  const rng = new SeededRandom(3);
  for (const promptLen of [1, 3, 9, 10]) {
    const ids = Array.from({ length: 300 }, () => 3 + Math.floor(rng.uniform() * 2000));
    ids[0] = tok.bosId;
    // special tokens (decoded to nothing) inside the prompt's tail and the continuation
    for (const at of [2, 6, 7, 8, 40, 120, 121, 122, 123, 124, 125]) ids[at] = tok.bosId;
    const s3 = new TextStream(tok, ids.slice(0, promptLen));
    let t3 = "";
    for (const id of ids.slice(promptLen)) t3 += s3.push(id);
    t3 += s3.flush();
    const whole = tok.decode(ids);
    assertEquals(tok.decode(ids.slice(0, promptLen)) + t3, whole);
  }
});

Deno.test("promptTokens() with the Alpaca template equals the training prompt of the data pipeline", () => {
  const tok = loadTokenizer(LLAMA2_TOKENIZER);
  const ids = promptTokens(tok, { instruction: "Reverse the word.", input: "llama" }, {
    instructTemplate: "alpaca",
    chatFormat: null,
  });
  const train = tokenizeMessages(tok, [
    {
      role: "user",
      content: [alpacaPrompt("Reverse the word.", "llama")],
      masked: true,
      eot: true,
    },
    { role: "assistant", content: ["amall"], masked: false, eot: true },
  ], "none");
  assertEquals(ids, train.tokens.slice(0, ids.length));
  assertEquals(train.mask[ids.length - 1], true);
  assertEquals(train.mask[ids.length], false); // the response starts right after
  // raw text: BOS + text; empty: BOS alone
  assertEquals(promptTokens(tok, "", { instructTemplate: null, chatFormat: null }), [tok.bosId]);
  assertEquals(
    promptTokens(tok, "Hi", { instructTemplate: null, chatFormat: null }),
    tok.encode("Hi", { bos: true }),
  );
  // llama2 chat format opens the [INST] block around the user text
  const chat = promptTokens(tok, { system: "Be brief.", user: "Hi" }, {
    instructTemplate: null,
    chatFormat: "llama2",
  });
  assertEquals(tok.decode(chat), "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]");
});
