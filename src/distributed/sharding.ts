/**
 * FSDP/ZeRO-3 style sharding of a flat buffer: the buffer is padded to a multiple of the
 * world size and rank r owns the r-th equal slice, so `reduceScatterSum(shard, full)`
 * and `allGather(full, shard)` apply directly (both need `full.length = W * shard.length`).
 */

/** Where one rank's shard of a flat buffer lies. */
export interface FlatShard {
  /** Elements in every rank's shard (the same on all ranks). */
  shardLength: number;
  /** Length of the padded full buffer: worldSize * shardLength >= length. */
  paddedLength: number;
  /** First element of this rank's shard in the full buffer. */
  start: number;
  /** Elements of this shard that are real (not padding): 0..shardLength. */
  validLength: number;
}

/**
 * The shard of rank `rank` when a flat buffer of `length` elements is split over
 * `worldSize` ranks. Trailing padding belongs to the last ranks and stays zero.
 */
export function flatShard(length: number, opts: { rank: number; worldSize: number }): FlatShard {
  const { rank, worldSize } = opts;
  if (!(Number.isInteger(length) && length >= 0)) {
    throw new Error(`flatShard: length ${length} is not a non-negative integer`);
  }
  if (!(Number.isInteger(worldSize) && worldSize >= 1 && rank >= 0 && rank < worldSize)) {
    throw new Error(`flatShard: rank ${rank} of world size ${worldSize} is not valid`);
  }
  const shardLength = Math.ceil(length / worldSize);
  const start = rank * shardLength;
  return {
    shardLength,
    paddedLength: shardLength * worldSize,
    start,
    validLength: Math.max(0, Math.min(shardLength, length - start)),
  };
}
