/**
 * A small key-value store over TCP for the rendezvous, like torch.distributed.TCPStore:
 * rank 0 serves it at MASTER_ADDR:MASTER_PORT, every rank (rank 0 too) is a client.
 * `get` blocks until the key is set, `add` keeps a decimal counter, so barriers and the
 * exchange of addresses and the NCCL unique id need nothing else.
 *
 * Wire format, both directions: u32 little-endian body length, then the body.
 * Request body: u8 op, u32 key length, key (UTF-8), value bytes (the rest).
 * Response body: u8 status (0 ok, 1 error), payload (value, or an error message).
 */
import { DistributedError } from "./errors.ts";
import { ByteReader, closeQuietly, connectWithRetry, writeAll } from "./_socket.ts";

const OP_SET = 1;
const OP_GET = 2;
const OP_ADD = 3;
const OP_CHECK = 4;
const OP_DELETE = 5;

const enc = new TextEncoder();
const dec = new TextDecoder();

function frame(head: number, key: Uint8Array | null, value: Uint8Array): Uint8Array {
  const keyPart = key === null ? 0 : 4 + key.length;
  const body = 1 + keyPart + value.length;
  const out = new Uint8Array(4 + body);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, body, true);
  out[4] = head;
  let at = 5;
  if (key !== null) {
    dv.setUint32(at, key.length, true);
    out.set(key, at + 4);
    at += 4 + key.length;
  }
  out.set(value, at);
  return out;
}

async function readFrame(reader: ByteReader): Promise<Uint8Array | null> {
  const len = new Uint8Array(4);
  if (!(await reader.readExact(len))) return null;
  const body = new Uint8Array(new DataView(len.buffer).getUint32(0, true));
  if (!(await reader.readExact(body))) throw new Error("connection closed mid-message");
  return body;
}

/** The server side, run by rank 0. */
export class TcpStoreServer {
  readonly #data = new Map<string, Uint8Array>();
  readonly #waiters = new Map<string, Array<() => void>>();
  readonly #conns = new Set<Deno.Conn>();
  #closed = false;

  private constructor(private readonly listener: Deno.TcpListener) {
    listener.unref(); // the store alone never keeps rank 0's process alive
    this.#acceptLoop();
  }

  /**
   * Listen on `hostname:port` (port 0 picks a free one).
   * @throws DistributedError when the port is taken.
   */
  static listen(hostname: string, port: number): TcpStoreServer {
    try {
      return new TcpStoreServer(Deno.listen({ hostname, port, transport: "tcp" }));
    } catch (e) {
      if (e instanceof Deno.errors.AddrInUse) {
        throw new DistributedError(
          `rendezvous port ${hostname}:${port} is already in use (another job?); ` +
            `pick a free one with --master_port or MASTER_PORT`,
        );
      }
      throw e;
    }
  }

  /** The port the store listens on. */
  get port(): number {
    return this.listener.addr.port;
  }

  /** Stop serving and drop every client connection. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.listener);
    for (const c of this.#conns) closeQuietly(c);
    this.#conns.clear();
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.listener.accept();
      } catch {
        return; // listener closed
      }
      conn.setNoDelay(true);
      conn.unref();
      this.#conns.add(conn);
      this.#serve(conn).finally(() => {
        this.#conns.delete(conn);
        closeQuietly(conn);
      });
    }
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const reader = new ByteReader(conn);
    try {
      for (;;) {
        const body = await readFrame(reader);
        if (body === null) return;
        const reply = await this.#handle(body);
        await writeAll(conn, reply);
      }
    } catch {
      // a client went away; its rank's own failure is reported elsewhere
    }
  }

  async #handle(body: Uint8Array): Promise<Uint8Array> {
    const op = body[0];
    const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
    const keyLen = dv.getUint32(1, true);
    const key = dec.decode(body.subarray(5, 5 + keyLen));
    const value = body.subarray(5 + keyLen);
    switch (op) {
      case OP_SET:
        this.#set(key, value.slice());
        return frame(0, null, new Uint8Array(0));
      case OP_GET:
        while (!this.#data.has(key)) {
          await new Promise<void>((resolve) => {
            const list = this.#waiters.get(key) ?? [];
            list.push(resolve);
            this.#waiters.set(key, list);
          });
        }
        return frame(0, null, this.#data.get(key)!);
      case OP_ADD: {
        const old = this.#data.get(key);
        const next = (old === undefined ? 0 : Number(dec.decode(old))) + Number(dec.decode(value));
        this.#set(key, enc.encode(String(next)));
        return frame(0, null, enc.encode(String(next)));
      }
      case OP_CHECK:
        return frame(0, null, Uint8Array.of(this.#data.has(key) ? 1 : 0));
      case OP_DELETE: {
        const had = this.#data.delete(key);
        return frame(0, null, Uint8Array.of(had ? 1 : 0));
      }
      default:
        return frame(1, null, enc.encode(`unknown store op ${op}`));
    }
  }

  #set(key: string, value: Uint8Array): void {
    this.#data.set(key, value);
    const list = this.#waiters.get(key);
    if (list) {
      this.#waiters.delete(key);
      for (const wake of list) wake();
    }
  }
}

/** Options of `TcpStoreClient.connect`. */
export interface StoreClientOptions {
  /** How long to retry the first connection and to wait in any request (ms). */
  timeoutMs: number;
  /** Who is asking, for error messages, e.g. "rank 3". */
  who?: string;
}

/** A client of the store; requests run one at a time in call order. */
export class TcpStoreClient {
  #chain: Promise<unknown> = Promise.resolve();
  #broken: Error | null = null;
  readonly #reader: ByteReader;

  private constructor(
    private readonly conn: Deno.TcpConn,
    private readonly address: string,
    /** Default wait for each request (ms). */
    public timeoutMs: number,
  ) {
    conn.unref(); // request timers keep the process alive while a request is pending
    this.#reader = new ByteReader(conn);
  }

  /**
   * Connect to the store at `hostname:port`, retrying while the server is not up yet.
   * @throws DistributedError when no server answers within `timeoutMs`.
   */
  static async connect(
    hostname: string,
    port: number,
    opts: StoreClientOptions,
  ): Promise<TcpStoreClient> {
    const address = `${hostname}:${port}`;
    try {
      const conn = await connectWithRetry(hostname, port, Date.now() + opts.timeoutMs);
      return new TcpStoreClient(conn, address, opts.timeoutMs);
    } catch (e) {
      throw new DistributedError(
        `${opts.who ?? "this process"} could not reach the rendezvous store at ${address} ` +
          `within ${opts.timeoutMs / 1000} s (${(e as Error).message}); check that rank 0 ` +
          `started and that MASTER_ADDR/MASTER_PORT are right`,
        0,
      );
    }
  }

  /** The address of this end of the connection (the interface that reaches rank 0). */
  get localHostname(): string {
    return this.conn.localAddr.hostname;
  }

  /** Store `value` under `key`, waking everyone waiting for it. */
  async set(key: string, value: Uint8Array | string): Promise<void> {
    const v = typeof value === "string" ? enc.encode(value) : value;
    await this.#request(OP_SET, key, v, `set '${key}'`);
  }

  /** The value of `key`, waiting until some rank sets it. */
  get(key: string, timeoutMs?: number): Promise<Uint8Array> {
    return this.#request(OP_GET, key, new Uint8Array(0), `wait for '${key}'`, timeoutMs);
  }

  /** `get` decoded as UTF-8. */
  async getString(key: string, timeoutMs?: number): Promise<string> {
    return dec.decode(await this.get(key, timeoutMs));
  }

  /** Add `delta` to the counter at `key` (0 when unset) and return the new value. */
  async add(key: string, delta: number): Promise<number> {
    const r = await this.#request(OP_ADD, key, enc.encode(String(delta)), `add to '${key}'`);
    return Number(dec.decode(r));
  }

  /** Whether `key` is set, without waiting. */
  async check(key: string): Promise<boolean> {
    return (await this.#request(OP_CHECK, key, new Uint8Array(0), `check '${key}'`))[0] === 1;
  }

  /** Remove `key`; returns whether it was set. */
  async delete(key: string): Promise<boolean> {
    return (await this.#request(OP_DELETE, key, new Uint8Array(0), `delete '${key}'`))[0] === 1;
  }

  /** Wait until every key is set. */
  async wait(keys: string[], timeoutMs?: number): Promise<void> {
    for (const k of keys) await this.get(k, timeoutMs);
  }

  /**
   * Block until `worldSize` callers reached the barrier called `name` (each name is used
   * once per job).
   */
  async barrier(name: string, worldSize: number, timeoutMs?: number): Promise<void> {
    const arrived = await this.add(`${name}/count`, 1);
    if (arrived === worldSize) await this.set(`${name}/done`, "1");
    await this.get(`${name}/done`, timeoutMs);
  }

  /** Close the connection; later requests throw. */
  close(): void {
    this.#broken ??= new DistributedError(`the store connection to ${this.address} is closed`);
    closeQuietly(this.conn);
  }

  #request(
    op: number,
    key: string,
    value: Uint8Array,
    what: string,
    timeoutMs = this.timeoutMs,
  ): Promise<Uint8Array> {
    const run = async (): Promise<Uint8Array> => {
      if (this.#broken) throw this.#broken;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          this.#broken = new DistributedError(
            `timed out after ${timeoutMs / 1000} s trying to ${what} in the rendezvous ` +
              `store at ${this.address}; a rank did not arrive (crashed, hung or never started)`,
          );
          closeQuietly(this.conn);
          reject(this.#broken);
        }, timeoutMs);
      });
      try {
        return await Promise.race([this.#roundTrip(op, key, value), timeout]);
      } catch (e) {
        if (e instanceof DistributedError) throw e;
        this.#broken = new DistributedError(
          `lost the connection to the rendezvous store at ${this.address} (rank 0's ` +
            `process is gone?) while trying to ${what}: ${(e as Error).message}`,
          0,
        );
        closeQuietly(this.conn);
        throw this.#broken;
      } finally {
        clearTimeout(timer);
      }
    };
    const p = this.#chain.then(run, run);
    this.#chain = p.catch(() => {});
    return p;
  }

  async #roundTrip(op: number, key: string, value: Uint8Array): Promise<Uint8Array> {
    await writeAll(this.conn, frame(op, enc.encode(key), value));
    const body = await readFrame(this.#reader);
    if (body === null) throw new Error("the store closed the connection");
    if (body[0] !== 0) throw new Error(dec.decode(body.subarray(1)));
    return body.slice(1);
  }
}
