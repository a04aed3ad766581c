/**
 * Streaming detokenization: turns generated ids into text pieces as they arrive, so the
 * printed pieces concatenate to exactly `decode(prompt + generated)` minus the prompt's text.
 * SentencePiece decodes a token differently at the start of a text (the dummy-prefix space
 * is dropped) and byte-fallback tokens form one character only together, so each step
 * decodes the whole sequence and emits what is new, holding back a trailing incomplete
 * UTF-8 character (U+FFFD) until it completes.
 */
import type { Tokenizer } from "../tokenizers/types.ts";

/** Incremental decoder of one generated sequence. */
export class TextStream {
  readonly #tok: Tokenizer;
  readonly #ids: number[];
  readonly #promptText: string;
  readonly #promptLen: number;
  #printed = "";

  /** `promptIds`: the tokens before the generated ones (their text is not emitted). */
  constructor(tokenizer: Tokenizer, promptIds: readonly number[]) {
    this.#tok = tokenizer;
    this.#ids = [...promptIds];
    this.#promptLen = promptIds.length;
    this.#promptText = tokenizer.decode(promptIds);
  }

  /** The text of the generated tokens so far (whole decode). */
  #text(): string {
    const full = this.#tok.decode(this.#ids);
    if (full.startsWith(this.#promptText)) return full.slice(this.#promptText.length);
    // decoding joined the prompt's last characters with new ones: fall back to the new ids
    return this.#tok.decode(this.#ids.slice(this.#promptLen));
  }

  /** Add one generated id; returns the text that can be printed now (maybe ""). */
  push(id: number): string {
    this.#ids.push(id);
    let text = this.#text();
    while (text.endsWith("\uFFFD")) text = text.slice(0, -1); // incomplete character
    return this.#emit(text);
  }

  /** Everything not yet emitted (call once generation ends). */
  flush(): string {
    return this.#emit(this.#text());
  }

  /** All generated text so far, as emitted plus pending. */
  get text(): string {
    return this.#text();
  }

  #emit(text: string): string {
    // printed text cannot be taken back; a decode that rewrote it emits nothing new
    if (!text.startsWith(this.#printed)) return "";
    const out = text.slice(this.#printed.length);
    this.#printed = text;
    return out;
  }
}
