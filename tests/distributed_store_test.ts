/** The rendezvous store: a server and clients in one process, over loopback. */
import { deepStrictEqual as assertEquals, rejects as assertRejects } from "node:assert/strict";
import { DistributedError } from "../src/distributed/errors.ts";
import { TcpStoreClient, TcpStoreServer } from "../src/distributed/tcp_store.ts";

async function withStore(
  n: number,
  body: (clients: TcpStoreClient[], server: TcpStoreServer) => Promise<void>,
): Promise<void> {
  const server = TcpStoreServer.listen("127.0.0.1", 0);
  const clients: TcpStoreClient[] = [];
  try {
    for (let i = 0; i < n; i++) {
      clients.push(await TcpStoreClient.connect("127.0.0.1", server.port, { timeoutMs: 20_000 }));
    }
    await body(clients, server);
  } finally {
    for (const c of clients) c.close();
    server.close();
  }
}

Deno.test("`TcpStoreClient.get()` waits until another client sets the key", async () => {
  await withStore(2, async ([a, b]) => {
    const pending = a.getString("nccl/id");
    assertEquals(await b.check("nccl/id"), false);
    await b.set("nccl/id", "abc");
    assertEquals(await pending, "abc");
    const bytes = Uint8Array.from({ length: 128 }, (_, i) => (i * 37) & 255);
    await a.set("bin", bytes);
    assertEquals(await b.get("bin"), bytes);
    assertEquals(await b.check("bin"), true);
    assertEquals(await b.delete("bin"), true);
    assertEquals(await b.check("bin"), false);
  });
});

Deno.test("`TcpStoreClient.add()` keeps one counter across clients", async () => {
  await withStore(3, async (cs) => {
    const got = await Promise.all(cs.map((c) => c.add("count", 2)));
    assertEquals(got.sort(), [2, 4, 6]);
    assertEquals(await cs[0].getString("count"), "6");
    assertEquals(await cs[1].add("count", -6), 0);
  });
});

Deno.test("`TcpStoreClient.barrier()` returns only once every client arrived", async () => {
  await withStore(3, async (cs) => {
    const order: string[] = [];
    const early = Promise.all(
      cs.slice(0, 2).map((c, i) => c.barrier("b1", 3).then(() => order.push(`done${i}`))),
    );
    // Wait until both early clients are inside the barrier: they cannot pass yet.
    while (await cs[2].add("b1/count", 0) < 2) await new Promise((r) => setTimeout(r, 10));
    await cs[2].check("b1/done"); // one more round trip: any wrongly released client has run
    order.push("third arrives");
    await cs[2].barrier("b1", 3);
    await early;
    assertEquals(order[0], "third arrives");
  });
});

Deno.test("`TcpStoreClient.get()` throws DistributedError naming the key after its timeout", async () => {
  await withStore(1, async ([a]) => {
    await assertRejects(a.get("never", 300), (e: Error) => {
      return e instanceof DistributedError && /wait for 'never'/.test(e.message);
    });
    // The connection is unusable after a timeout; later calls say so.
    await assertRejects(a.check("x"), DistributedError);
  });
});

Deno.test("`TcpStoreClient` requests fail when the store's process goes away", async () => {
  await withStore(1, async ([a], server) => {
    const pending = a.get("never");
    server.close();
    await assertRejects(pending, /lost the connection to the rendezvous store/);
  });
});

Deno.test("`TcpStoreServer.listen()` throws DistributedError when the port is taken", () => {
  const server = TcpStoreServer.listen("127.0.0.1", 0);
  try {
    let err: unknown = null;
    try {
      TcpStoreServer.listen("127.0.0.1", server.port).close();
    } catch (e) {
      err = e;
    }
    assertEquals(err instanceof DistributedError && /already in use/.test(err.message), true);
  } finally {
    server.close();
  }
});

Deno.test("`TcpStoreClient.connect()` retries until the server is up", async () => {
  // Reserve a port, then start the server on it a little after the client begins trying.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const connecting = TcpStoreClient.connect("127.0.0.1", port, { timeoutMs: 30_000 });
  await new Promise((r) => setTimeout(r, 100));
  const server = TcpStoreServer.listen("127.0.0.1", port);
  const client = await connecting;
  try {
    await client.set("k", "v");
    assertEquals(await client.getString("k"), "v");
  } finally {
    client.close();
    server.close();
  }
});
