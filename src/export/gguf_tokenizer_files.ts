/**
 * GGUF tokenizer metadata back to the files tune's (and Hugging Face's) tokenizers read, for
 * `tune export hf`:
 *
 * - model "llama" (SentencePiece): `tokenizer.model`, a SentencePiece ModelProto with every
 *   token as a piece (score, type), a BPE trainer spec (byte fallback when byte tokens exist,
 *   unk/bos/eos/pad ids) and the normalizer flags (`add_space_prefix`).
 * - model "gpt2" (byte-level BPE): `tokenizer.json` with the vocabulary, merges, control and
 *   user-defined tokens as added tokens, the pre-tokenizer regex `tokenizer.ggml.pre` names
 *   (llama-bpe: Llama 3's, qwen2: Qwen2's, else GPT-2's) and BOS in the post-processor when
 *   `add_bos_token`.
 * Both get a `tokenizer_config.json` with the BOS/EOS tokens and the chat template.
 */
import { join } from "node:path";
import { atomicWrite } from "../checkpoint/atomic_write.ts";
import { TuneError } from "../errors.ts";
import { LLAMA3_PATTERN, QWEN2_PATTERN } from "../tokenizers/_regex.ts";
import { TokenType } from "./gguf_tokenizer.ts";

class ProtoWriter {
  #bytes: number[] = [];
  varint(v: number) {
    let x = v >>> 0 === v ? v : v < 0 ? 2 ** 64 + v : v; // negatives as 64-bit two's complement
    while (x >= 0x80) {
      this.#bytes.push((x % 0x80) | 0x80);
      x = Math.floor(x / 0x80);
    }
    this.#bytes.push(x);
  }
  tag(field: number, wire: number) {
    this.varint(field * 8 + wire);
  }
  int(field: number, v: number) {
    this.tag(field, 0);
    this.varint(v);
  }
  float(field: number, v: number) {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.#bytes.push(...b);
  }
  bytes(field: number, b: Uint8Array) {
    this.tag(field, 2);
    this.varint(b.length);
    for (const x of b) this.#bytes.push(x);
  }
  string(field: number, s: string) {
    this.bytes(field, new TextEncoder().encode(s));
  }
  done(): Uint8Array {
    return Uint8Array.from(this.#bytes);
  }
}

function num(meta: Map<string, unknown>, key: string): number {
  const v = meta.get(key);
  return typeof v === "number" ? v : -1;
}

function sentencePieceModel(meta: Map<string, unknown>): Uint8Array {
  const tokens = meta.get("tokenizer.ggml.tokens") as string[];
  const scores = (meta.get("tokenizer.ggml.scores") as number[] | undefined) ?? [];
  const types = (meta.get("tokenizer.ggml.token_type") as number[] | undefined) ?? [];
  const w = new ProtoWriter();
  tokens.forEach((t, i) => {
    const p = new ProtoWriter();
    p.string(1, t);
    p.float(2, scores[i] ?? 0);
    p.int(3, types[i] ?? TokenType.NORMAL);
    w.bytes(1, p.done());
  });
  const trainer = new ProtoWriter();
  trainer.int(3, 2); // model_type BPE
  trainer.int(35, types.includes(TokenType.BYTE) ? 1 : 0); // byte_fallback
  trainer.int(40, Math.max(0, num(meta, "tokenizer.ggml.unknown_token_id")));
  trainer.int(41, num(meta, "tokenizer.ggml.bos_token_id"));
  trainer.int(42, num(meta, "tokenizer.ggml.eos_token_id"));
  trainer.int(43, num(meta, "tokenizer.ggml.padding_token_id"));
  w.bytes(2, trainer.done());
  const norm = new ProtoWriter();
  norm.string(1, "identity");
  norm.int(3, meta.get("tokenizer.ggml.add_space_prefix") === false ? 0 : 1);
  norm.int(4, 0); // remove_extra_whitespaces
  norm.int(5, 1); // escape_whitespaces
  w.bytes(3, norm.done());
  return w.done();
}

function bpeTokenizerJson(meta: Map<string, unknown>): unknown {
  const tokens = meta.get("tokenizer.ggml.tokens") as string[];
  const types = (meta.get("tokenizer.ggml.token_type") as number[] | undefined) ?? [];
  const merges = (meta.get("tokenizer.ggml.merges") as string[] | undefined) ?? [];
  const pre = String(meta.get("tokenizer.ggml.pre") ?? "default");
  const vocab: Record<string, number> = {};
  const added: unknown[] = [];
  tokens.forEach((t, id) => {
    const ty = types[id] ?? TokenType.NORMAL;
    if (ty === TokenType.CONTROL || ty === TokenType.USER_DEFINED) {
      added.push({ id, content: t, special: ty === TokenType.CONTROL });
    } else {
      vocab[t] = id;
    }
  });
  const pattern = pre === "llama-bpe" ? LLAMA3_PATTERN : pre === "qwen2" ? QWEN2_PATTERN : null;
  const preTokenizer = pattern
    ? {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, use_regex: false },
      ],
    }
    : { type: "ByteLevel", add_prefix_space: false, use_regex: true };
  const bos = num(meta, "tokenizer.ggml.bos_token_id");
  const addBos = meta.get("tokenizer.ggml.add_bos_token") === true && bos >= 0;
  return {
    model: { type: "BPE", vocab, merges, ignore_merges: pre === "llama-bpe" },
    normalizer: pre === "qwen2" ? { type: "NFC" } : null,
    pre_tokenizer: preTokenizer,
    post_processor: addBos
      ? {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: tokens[bos], type_id: 0 } }, {
          Sequence: { id: "A", type_id: 0 },
        }],
        pair: [],
        special_tokens: { [tokens[bos]]: { id: tokens[bos], ids: [bos], tokens: [tokens[bos]] } },
      }
      : null,
    decoder: { type: "ByteLevel" },
    added_tokens: added,
  };
}

/** Write the tokenizer files of a GGUF's metadata into `dir`; returns their names. */
export function writeGgufTokenizer(meta: Map<string, unknown>, dir: string): string[] {
  const model = meta.get("tokenizer.ggml.model");
  const tokens = meta.get("tokenizer.ggml.tokens") as string[] | undefined;
  if (!tokens) {
    throw new TuneError(`the GGUF file has no tokenizer.ggml.tokens; it holds no tokenizer`);
  }
  const files: string[] = [];
  if (model === "llama") {
    atomicWrite(join(dir, "tokenizer.model"), sentencePieceModel(meta));
    files.push("tokenizer.model");
  } else if (model === "gpt2") {
    atomicWrite(join(dir, "tokenizer.json"), JSON.stringify(bpeTokenizerJson(meta)) + "\n");
    files.push("tokenizer.json");
  } else {
    throw new TuneError(`GGUF tokenizer model ${model} is not one tune reads (llama, gpt2)`);
  }
  const tok = (k: string) => {
    const id = num(meta, k);
    return id >= 0 ? tokens[id] : null;
  };
  const config: Record<string, unknown> = {
    bos_token: tok("tokenizer.ggml.bos_token_id"),
    eos_token: tok("tokenizer.ggml.eos_token_id"),
    add_bos_token: meta.get("tokenizer.ggml.add_bos_token") === true,
    add_eos_token: meta.get("tokenizer.ggml.add_eos_token") === true,
  };
  const pad = tok("tokenizer.ggml.padding_token_id");
  if (pad !== null) config.pad_token = pad;
  const tmpl = meta.get("tokenizer.chat_template");
  if (typeof tmpl === "string") config.chat_template = tmpl;
  atomicWrite(join(dir, "tokenizer_config.json"), JSON.stringify(config, null, 2) + "\n");
  files.push("tokenizer_config.json");
  return files;
}
