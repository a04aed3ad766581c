/**
 * The byte-pair merge loop shared by every tokenizer format: adjacent symbols are merged
 * best-first (lowest priority value, ties to the leftmost pair) until no adjacent pair is
 * mergeable. Symbols live in a doubly linked list and candidate pairs in a binary heap, so a
 * text of n symbols costs O(n log n) rather than the O(n^2) of rescanning after each merge.
 * Stale heap entries (a side already merged into something else) are skipped when popped,
 * as SentencePiece's bpe_model.cc does.
 */

/** Priority of merging `left` and `right` into `left + right`; undefined when not mergeable. */
export type PairPriority = (left: string, right: string) => number | undefined;

interface Candidate {
  priority: number;
  left: number;
  right: number;
  /** length of left + right when queued; a mismatch marks a stale entry */
  size: number;
}

function before(a: Candidate, b: Candidate): boolean {
  return a.priority < b.priority || (a.priority === b.priority && a.left < b.left);
}

class CandidateHeap {
  private items: Candidate[] = [];
  get size(): number {
    return this.items.length;
  }
  push(c: Candidate): void {
    const items = this.items;
    items.push(c);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(items[i], items[parent])) break;
      [items[i], items[parent]] = [items[parent], items[i]];
      i = parent;
    }
  }
  pop(): Candidate {
    const items = this.items;
    const top = items[0];
    const last = items.pop()!;
    if (items.length > 0) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < items.length && before(items[l], items[best])) best = l;
        if (r < items.length && before(items[r], items[best])) best = r;
        if (best === i) break;
        [items[i], items[best]] = [items[best], items[i]];
        i = best;
      }
    }
    return top;
  }
}

/**
 * Merge `symbols` best-first by `priority`; `frozen[i]` marks symbols that never merge
 * (SentencePiece user-defined symbols). Returns the merged symbols in order.
 */
export function bpeMerge(
  symbols: readonly string[],
  priority: PairPriority,
  frozen?: readonly boolean[],
): string[] {
  const n = symbols.length;
  if (n < 2) return [...symbols];
  const sym = [...symbols];
  const prev = new Int32Array(n);
  const next = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  const heap = new CandidateHeap();
  const consider = (left: number, right: number) => {
    if (left < 0 || right < 0) return;
    if (frozen && (frozen[left] || frozen[right])) return;
    const p = priority(sym[left], sym[right]);
    if (p === undefined) return;
    heap.push({ priority: p, left, right, size: sym[left].length + sym[right].length });
  };
  for (let i = 0; i + 1 < n; i++) consider(i, i + 1);
  while (heap.size > 0) {
    const c = heap.pop();
    const l = c.left;
    const r = c.right;
    if (sym[l] === "" || sym[r] === "" || next[l] !== r) continue;
    if (sym[l].length + sym[r].length !== c.size) continue;
    sym[l] = sym[l] + sym[r];
    sym[r] = "";
    next[l] = next[r];
    if (next[r] >= 0) prev[next[r]] = l;
    consider(prev[l], l);
    consider(l, next[l]);
  }
  const out: string[] = [];
  for (let i = 0; i >= 0; i = next[i]) out.push(sym[i]);
  return out;
}
