/** Small TCP helpers shared by the store and the peer mesh. */

/** Reads exact byte counts from a connection through a 64 KiB staging buffer. */
export class ByteReader {
  #stage = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;
  constructor(private readonly conn: Deno.Conn) {}

  /**
   * Fill `dst` completely. Returns false on a clean end of stream before the first byte;
   * throws when the stream ends part-way through.
   */
  async readExact(dst: Uint8Array): Promise<boolean> {
    let filled = 0;
    const staged = Math.min(this.#end - this.#start, dst.length);
    if (staged > 0) {
      dst.set(this.#stage.subarray(this.#start, this.#start + staged));
      this.#start += staged;
      filled = staged;
    }
    while (filled < dst.length) {
      const want = dst.length - filled;
      if (want >= this.#stage.length) {
        // Large payloads are read straight into their destination.
        const n = await this.conn.read(dst.subarray(filled));
        if (n === null) return eof(filled);
        filled += n;
      } else {
        const n = await this.conn.read(this.#stage);
        if (n === null) return eof(filled);
        const take = Math.min(n, want);
        dst.set(this.#stage.subarray(0, take), filled);
        filled += take;
        this.#start = take;
        this.#end = n;
      }
    }
    return true;
  }
}

function eof(filled: number): boolean {
  if (filled === 0) return false;
  throw new Error("connection closed in the middle of a message");
}

/** Write all of `data` (a single `write` may take only part of it). */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) done += await conn.write(data.subarray(done));
}

/** "localhost" is resolved by Deno to its first address, which may be ::1; use IPv4. */
export function connectHost(hostname: string): string {
  return hostname === "localhost" ? "127.0.0.1" : hostname;
}

/**
 * Connect to `hostname:port`, retrying refused connections (the server may not be up
 * yet) until `deadline` (a `Date.now()` value). Throws the last error after the deadline.
 */
export async function connectWithRetry(
  hostname: string,
  port: number,
  deadline: number,
): Promise<Deno.TcpConn> {
  let delay = 20;
  for (;;) {
    try {
      const conn = await Deno.connect({ hostname: connectHost(hostname), port });
      conn.setNoDelay(true);
      return conn;
    } catch (e) {
      if (Date.now() + delay > deadline) throw e;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 500);
    }
  }
}

/** Close a connection or listener, ignoring "already closed". */
export function closeQuietly(resource: { close(): void } | null | undefined): void {
  try {
    resource?.close();
  } catch {
    // already closed
  }
}

/** A timer that does not keep the process alive by itself. */
export function unrefTimeout(fn: () => void, ms: number): ReturnType<typeof setTimeout> {
  const id = setTimeout(fn, ms);
  Deno.unrefTimer(id);
  return id;
}
