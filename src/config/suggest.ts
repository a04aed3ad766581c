/** "Did you mean" suggestions by edit distance. */

/** Levenshtein distance between two strings (insert, delete, substitute each cost 1). */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const sub = prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      cur.push(Math.min(prev[j] + 1, cur[j - 1] + 1, sub));
    }
    prev = cur;
  }
  return prev[b.length];
}

/**
 * The candidate closest to `word` (ties go to the earlier candidate), or undefined when
 * there are no candidates. Case is ignored when measuring.
 */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDist = Infinity;
  const w = word.toLowerCase();
  for (const c of candidates) {
    const lower = c.toLowerCase();
    // a name the word begins (a truncated name) is nearer than any edit
    const d = w.length >= 3 && lower.startsWith(w) ? 0.5 : editDistance(w, lower);
    if (d < bestDist) {
      best = c;
      bestDist = d;
    }
  }
  return best;
}

/**
 * The candidate closest to `word` when it is near enough to be a likely typo (at most a
 * third of the word's letters off, and at least 2 allowed), else undefined.
 */
export function likelyTypoOf(word: string, candidates: Iterable<string>): string | undefined {
  const best = closest(word, candidates);
  if (best === undefined) return undefined;
  const w = word.toLowerCase();
  const b = best.toLowerCase();
  const d = w.length >= 3 && b.startsWith(w) ? 0 : editDistance(w, b);
  return d <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

/** `; did you mean 'x'?` for an error message, or "" when there is nothing to suggest. */
export function didYouMean(word: string, candidates: Iterable<string>): string {
  const best = closest(word, candidates);
  return best === undefined ? "" : `; did you mean '${best}'?`;
}

/**
 * `didYouMean` for config keys: a dotted candidate (`model.lora_dropout`) is also measured
 * by its last part, so a top-level typo of a section's key suggests that section's key.
 */
export function didYouMeanKey(word: string, candidates: Iterable<string>): string {
  let best: string | undefined;
  let bestDist = Infinity;
  const w = word.toLowerCase();
  for (const c of candidates) {
    const lower = c.toLowerCase();
    const last = lower.slice(lower.lastIndexOf(".") + 1);
    // the half point prefers an exact top-level match over a section's key at equal distance
    const d = Math.min(editDistance(w, lower), editDistance(w, last) + 0.5);
    if (d < bestDist) {
      best = c;
      bestDist = d;
    }
  }
  return best === undefined ? "" : `; did you mean '${best}'?`;
}
