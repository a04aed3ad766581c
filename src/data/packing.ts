/**
 * Greedy sample packing, torchtune's PackedDataset: samples are concatenated in order into
 * packs of exactly `maxSeqLen` tokens (the last one padded). Because every sample's last
 * label is -100 (labels are shifted per sample before packing), no position is trained to
 * predict the first token of the next sample: labels are masked across boundaries.
 * Padding: tokens = padId, labels = -100, inputPos continues counting (clamped to T - 1).
 *
 * The collated batch turns `seqLens` into segment ids and keeps `inputPos`; the model then
 * attends block-causally (no token sees another sample of its pack) and rotates each token
 * at its own sample's position, as torchtune does.
 */
import { TuneError } from "../errors.ts";
import { IGNORE_INDEX, type Sample } from "./types.ts";

/** Options of `packSamples`. */
export interface PackOptions {
  /** Tokens per pack (T). */
  maxSeqLen: number;
  /** Token id for padding the last pack. */
  padId: number;
  /**
   * When the last sample does not fit: true splits it into the next pack (text completion
   * default); false moves it whole to the next pack (instruct/chat default).
   */
  splitAcrossPack?: boolean;
  /** Stop after this many packs (torchtune's max_packs). */
  maxPacks?: number | null;
}

interface Building {
  tokens: number[];
  labels: number[];
  inputPos: number[];
  seqLens: number[];
}

/** Pack tokenized samples into (maxSeqLen)-long samples; see the module doc. */
export function packSamples(samples: Iterable<Sample>, options: PackOptions): Sample[] {
  const T = options.maxSeqLen;
  const split = options.splitAcrossPack ?? false;
  const maxPacks = options.maxPacks ?? null;
  const packs: Sample[] = [];
  const full = () => maxPacks !== null && packs.length === maxPacks;
  let cur: Building = { tokens: [], labels: [], inputPos: [], seqLens: [] };
  let previousBoundary = 0;

  const addPack = (p: Building) => {
    const n = p.tokens.length;
    const tokens = new Int32Array(T).fill(options.padId); // (T)
    const labels = new Int32Array(T).fill(IGNORE_INDEX); // (T)
    const inputPos = new Int32Array(T); // (T)
    tokens.set(p.tokens);
    labels.set(p.labels);
    inputPos.set(p.inputPos);
    const last = n > 0 ? p.inputPos[n - 1] : -1;
    for (let i = n; i < T; i++) inputPos[i] = Math.min(last + 1 + (i - n), T - 1);
    const seqLens = Int32Array.from(n < T ? [...p.seqLens, T - n] : p.seqLens);
    packs.push({ tokens, labels, inputPos, seqLens });
  };

  const splitAndAdd = (p: Building): Building => {
    let boundary: number;
    let seqLenPad: number[];
    if (split) {
      boundary = T;
      const leftover = T - p.seqLens.slice(0, -1).reduce((a, b) => a + b, 0);
      seqLenPad = leftover > 0 ? [leftover] : [];
    } else {
      boundary = previousBoundary;
      seqLenPad = [];
    }
    addPack({
      tokens: p.tokens.slice(0, boundary),
      labels: p.labels.slice(0, boundary),
      inputPos: p.inputPos.slice(0, boundary),
      seqLens: [...p.seqLens.slice(0, -1), ...seqLenPad],
    });
    const rest = p.tokens.slice(boundary);
    return {
      tokens: rest,
      labels: p.labels.slice(boundary),
      inputPos: p.inputPos.slice(boundary),
      seqLens: [split ? rest.length : p.seqLens[p.seqLens.length - 1]],
    };
  };

  let index = 0;
  for (const s of samples) {
    const L = s.tokens.length;
    if (L > T && !split) {
      throw new TuneError(
        `dataset sample ${index} is too long to pack (${L} > ${T} tokens); ` +
          `set dataset.split_across_pack=True or increase max_seq_len`,
      );
    }
    for (let i = 0; i < L; i++) {
      cur.tokens.push(s.tokens[i]);
      cur.labels.push(s.labels[i]);
      cur.inputPos.push(i % T);
    }
    cur.seqLens.push(L);
    while (cur.tokens.length > T && !full()) cur = splitAndAdd(cur);
    previousBoundary = cur.tokens.length;
    index++;
    if (full()) break;
  }
  if (cur.tokens.length > 0 && (maxPacks === null || packs.length < maxPacks)) addPack(cur);
  return packs;
}
