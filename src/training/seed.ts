/** The run's seed: the configured one, or a fresh one that the recipe logs so the run can be repeated. */

/** `seed` from the config, or a random 31-bit seed when it is null. */
export function resolveSeed(seed: number | null): number {
  if (seed !== null) return seed;
  return crypto.getRandomValues(new Uint32Array(1))[0] >>> 1;
}
