/** Splitting text on special-token strings (longest match first). */

/** A piece of text, or a special token found in it. */
export type Segment = { text: string } | { id: number };

/** A splitter over a fixed set of special-token strings. */
export class SpecialSplitter {
  private readonly re: RegExp | undefined;
  constructor(private readonly tokens: ReadonlyMap<string, number>) {
    const names = [...tokens.keys()].filter((s) => s !== "").sort((a, b) => b.length - a.length);
    const escaped = names.map((s) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&"));
    this.re = names.length > 0 ? new RegExp(escaped.join("|"), "gu") : undefined;
  }

  /** `text` cut into plain pieces and special ids, in order; empty pieces are dropped. */
  split(text: string): Segment[] {
    if (this.re === undefined) return text === "" ? [] : [{ text }];
    const out: Segment[] = [];
    let last = 0;
    for (const m of text.matchAll(this.re)) {
      if (m.index! > last) out.push({ text: text.slice(last, m.index) });
      out.push({ id: this.tokens.get(m[0])! });
      last = m.index! + m[0].length;
    }
    if (last < text.length) out.push({ text: text.slice(last) });
    return out;
  }
}

/**
 * Special tokens added over a base tokenizer's vocabulary (Phi-3's chat tokens, Phi-4's special
 * tokens): special-token text splits out on encode; on decode the added ids, and any id in
 * `[first, last]` (reserved rows with no name), are dropped or written by name.
 */
export class AddedTokens {
  readonly #names: ReadonlyMap<number, string>;
  readonly #splitter: SpecialSplitter;
  readonly #first: number;
  readonly #last: number;

  constructor(tokens: ReadonlyMap<string, number>, first: number, last: number) {
    this.#names = new Map([...tokens].map(([s, id]) => [id, s]));
    this.#splitter = new SpecialSplitter(tokens);
    this.#first = first;
    this.#last = last;
  }

  /** The ids of `text`: special-token text as its id, the pieces between through `plain`. */
  encode(text: string, plain: (text: string) => number[]): number[] {
    const ids: number[] = [];
    for (const seg of this.#splitter.split(text)) {
      if ("id" in seg) ids.push(seg.id);
      else ids.push(...plain(seg.text));
    }
    return ids;
  }

  /** The text of `ids`: runs of base ids through `plain`; added ids dropped when `skip`, else named. */
  decode(ids: readonly number[], skip: boolean, plain: (run: number[]) => string): string {
    let out = "";
    let run: number[] = [];
    const flush = () => {
      if (run.length > 0) out += plain(run);
      run = [];
    };
    for (const id of ids) {
      const name = this.#names.get(id);
      if (name === undefined && (id < this.#first || id > this.#last)) {
        run.push(id); // a base id
        continue;
      }
      if (skip) continue;
      flush();
      out += name ?? "";
    }
    flush();
    return out;
  }
}
