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
