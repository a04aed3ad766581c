/** What every tokenizer format's class shares: its ids and the component's truncation length. */
import type { DecodeOptions, EncodeOptions, Tokenizer } from "./types.ts";

/** The ids a format works out from its file, fixed once built. */
export interface TokenizerIds {
  vocabSize: number;
  bosId: number;
  eosId: number;
  padId: number;
  stopIds: readonly number[];
  specialTokens: ReadonlyMap<string, number>;
}

/**
 * The `Tokenizer` fields every format has. A format's constructor works its ids out (often
 * from the tables it builds first) and fixes them with one `setIds` call at its end.
 */
export abstract class TokenizerBase implements Tokenizer {
  declare readonly vocabSize: number;
  declare readonly bosId: number;
  declare readonly eosId: number;
  declare readonly padId: number;
  declare readonly stopIds: readonly number[];
  declare readonly specialTokens: ReadonlyMap<string, number>;
  /** Truncation length from the tokenizer component (set by the builder). */
  maxSeqLen: number | null = null;

  /** Fix the ids (once, from the constructor). */
  protected setIds(ids: TokenizerIds): void {
    Object.assign(this, ids);
  }

  abstract encode(text: string, options?: EncodeOptions): number[];
  abstract decode(ids: readonly number[], options?: DecodeOptions): string;
}

/** The stop ids: `eosId` (when the format has one), then the ids of `stopTokens` found in `special`, each once. */
export function stopIdsOf(
  eosId: number,
  stopTokens: readonly string[],
  special: ReadonlyMap<string, number>,
): number[] {
  const stops = stopTokens.map((n) => special.get(n)).filter((n): n is number => n !== undefined);
  return [...new Set([...(eosId >= 0 ? [eosId] : []), ...stops])];
}
