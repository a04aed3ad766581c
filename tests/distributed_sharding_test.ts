/** Flat-buffer sharding arithmetic (exact integers). */
import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import { flatShard } from "../src/distributed/sharding.ts";

Deno.test("`flatShard()` splits evenly and pads the last shards when needed", () => {
  assertEquals(flatShard(12, { rank: 1, worldSize: 3 }), {
    shardLength: 4,
    paddedLength: 12,
    start: 4,
    validLength: 4,
  });
  // 10 over 4 ranks: shards of 3, padded to 12; rank 3 holds one real element.
  const shards = [0, 1, 2, 3].map((rank) => flatShard(10, { rank, worldSize: 4 }));
  assertEquals(shards.map((s) => [s.start, s.validLength]), [[0, 3], [3, 3], [6, 3], [9, 1]]);
  assertEquals(shards[0].paddedLength, 12);
  // Fewer elements than ranks: the last ranks hold only padding.
  assertEquals(flatShard(2, { rank: 2, worldSize: 3 }).validLength, 0);
  assertEquals(flatShard(0, { rank: 0, worldSize: 2 }).shardLength, 0);
});

Deno.test("`flatShard()` covers every element exactly once over the ranks", () => {
  for (const [n, W] of [[1, 1], [7, 2], [1000, 3], [5, 8]]) {
    const seen = new Array(n).fill(0);
    for (let rank = 0; rank < W; rank++) {
      const s = flatShard(n, { rank, worldSize: W });
      for (let i = 0; i < s.validLength; i++) seen[s.start + i]++;
    }
    assertEquals(seen, new Array(n).fill(1), `n=${n} W=${W}`);
  }
});

Deno.test("`flatShard()` rejects a rank outside the world", () => {
  assertThrows(() => flatShard(10, { rank: 2, worldSize: 2 }), /rank 2 of world size 2/);
  assertThrows(() => flatShard(-1, { rank: 0, worldSize: 2 }), /length -1/);
});
