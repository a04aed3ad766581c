/**
 * Streaming detokenization: turns generated ids into text pieces as they arrive, so the
 * printed pieces concatenate to `decode(prompt + generated)` minus the prompt's text.
 * SentencePiece decodes a token differently at the start of a text (the dummy-prefix space
 * is dropped) and byte-fallback tokens form one character only together, so a piece is the
 * difference of two decodes of a short window that starts a few tokens back (the window's
 * own start is then the same in both), as Hugging Face's text-generation-inference streams:
 * the cost per token does not grow with the sequence. A piece that ends in an incomplete
 * UTF-8 character (U+FFFD) is held back until the character completes.
 */
import type { Tokenizer } from "../tokenizers/types.ts";

/** Prompt tokens the first window reaches back (context for the first new token's text). */
const PROMPT_CONTEXT = 4;

/** Incremental decoder of one generated sequence. */
export class TextStream {
  readonly #tok: Tokenizer;
  readonly #ids: number[];
  readonly #promptText: string;
  readonly #promptLen: number;
  /** Start of the decode window: tokens before it are printed and need no context. */
  #from: number;
  /** End of the tokens already printed (the window's context part is [#from, #upTo)). */
  #upTo: number;
  /** decode(ids[#from, #upTo)): the text of the window that is already printed. */
  #context: string;

  /** `promptIds`: the tokens before the generated ones (their text is not emitted). */
  constructor(tokenizer: Tokenizer, promptIds: readonly number[]) {
    this.#tok = tokenizer;
    this.#ids = [...promptIds];
    this.#promptLen = promptIds.length;
    this.#promptText = tokenizer.decode(promptIds);
    this.#upTo = promptIds.length;
    this.#from = this.#upTo;
    this.#context = "";
    this.#reach(Math.max(0, promptIds.length - PROMPT_CONTEXT));
  }

  /**
   * Start the window at `from`, or further back while its context decodes to nothing (special
   * tokens): a decoder treats a window's first text as the start of a text (SentencePiece drops
   * its leading space), which is right only where the sequence starts.
   */
  #reach(from: number): void {
    this.#from = from;
    this.#context = this.#tok.decode(this.#ids.slice(from, this.#upTo));
    while (this.#context === "" && this.#from > 0) {
      this.#from = Math.max(0, this.#from - PROMPT_CONTEXT);
      this.#context = this.#tok.decode(this.#ids.slice(this.#from, this.#upTo));
    }
  }

  /** Add one generated id; returns the text that can be printed now (maybe ""). */
  push(id: number): string {
    this.#ids.push(id);
    const text = this.#tok.decode(this.#ids.slice(this.#from));
    // hold back an incomplete character, and a window whose decode rewrote printed text
    if (text.endsWith("\uFFFD") || !text.startsWith(this.#context)) return "";
    const out = text.slice(this.#context.length);
    const from = this.#upTo;
    this.#upTo = this.#ids.length;
    this.#reach(from);
    return out;
  }

  /** Everything not yet emitted (call once generation ends). */
  flush(): string {
    const text = this.#tok.decode(this.#ids.slice(this.#from));
    if (!text.startsWith(this.#context)) return "";
    const out = text.slice(this.#context.length);
    this.#from = this.#upTo = this.#ids.length;
    this.#context = "";
    return out;
  }

  /** All generated text so far (one decode of the whole sequence). */
  get text(): string {
    const full = this.#tok.decode(this.#ids);
    if (full.startsWith(this.#promptText)) return full.slice(this.#promptText.length);
    // decoding joined the prompt's last characters with new ones: fall back to the new ids
    return this.#tok.decode(this.#ids.slice(this.#promptLen));
  }
}
