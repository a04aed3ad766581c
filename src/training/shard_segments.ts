/**
 * How a sharded run divides a store's flat layout: each layout group split over the ranks
 * (`flatShard`), with this rank's slice placed in its shard buffers, and the copy of those
 * slices out of the full values. Shared by the trainable (sharded.ts) and frozen
 * (sharded_frozen.ts) holders.
 */
import type { Backend, DeviceBuffer } from "../backend/ops.ts";
import { type FlatShard, flatShard } from "../distributed/sharding.ts";
import type { ParamStore } from "../params/store.ts";

/** One layout group and where this rank's slice of it lies. */
export interface Segment {
  name: string;
  /** First element of the group in the full flat buffer. */
  offset: number;
  /** Elements of the group (alignment padding included). */
  length: number;
  shard: FlatShard;
  /** First element of this rank's slice in the shard buffers. */
  shardOffset: number;
}

/**
 * The segments of a store's layout: each group (and with `tail` the layout's rounding past
 * its last group) split over the ranks, with this rank's slice placed in the shard buffers.
 * With group windows each group's slot must hold its padded length.
 */
export function shardSegments(
  store: ParamStore,
  rank: number,
  worldSize: number,
  tail = true,
): { segments: Segment[]; shardLength: number } {
  const segments: Segment[] = [];
  let at = 0;
  let shardAt = 0;
  const add = (name: string, offset: number, length: number) => {
    if (length === 0) return;
    const shard = flatShard(length, { rank, worldSize });
    if (name !== "tail" && store.windows && store.groupParams(name).length !== shard.paddedLength) {
      throw new Error(
        `group ${name}: build the model with groupWindows = world size (${worldSize})`,
      );
    }
    segments.push({ name, offset, length, shard, shardOffset: shardAt });
    shardAt += shard.shardLength;
  };
  for (const g of store.layout.groups) {
    if (g.offset !== at) throw new Error(`layout group ${g.name} is not contiguous`);
    add(g.name, g.offset, g.length);
    at = g.offset + g.length;
  }
  // the layout's total may round up past the last group (a tiny layout; frozen: no values)
  if (tail) add("tail", at, store.layout.total - at);
  return { segments, shardLength: shardAt };
}

/**
 * Hand `put` this rank's slice of every segment of `full` (whole layout) as a view of `full`
 * ((validLength) values): the callers copy it into their shard, on the device or the host.
 */
export function takeSlices(
  be: Backend,
  segments: readonly Segment[],
  full: DeviceBuffer,
  put: (s: Segment, from: DeviceBuffer) => void,
): void {
  for (const s of segments) {
    const n = s.shard.validLength;
    if (n > 0) put(s, be.view(full, s.offset + s.shard.start, n));
  }
}
