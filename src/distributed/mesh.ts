/**
 * Direct TCP connections between every pair of ranks (a full mesh), with framed messages,
 * a background reader per peer, deadlines, and failure detection.
 *
 * - Every connection is read continuously in the background, so a peer whose process ends
 *   is noticed at once (end of stream or reset), even between collectives.
 * - Every wait has a deadline (`timeoutMs`), so a hung peer is named instead of hanging
 *   the job. (Explicit heartbeats add nothing here: a process that stops sending is caught
 *   by the deadline of the next collective, one that dies by its socket closing.)
 * - The first failure is sticky: every later call throws the same `DistributedError`, and
 *   the failing rank tells the others which rank was lost before it closes its sockets, so
 *   every survivor names the same culprit.
 *
 * Frame: 24-byte header (u32 magic, kind, op, seq, byte length low, byte length high;
 * little-endian) then the payload.
 */
import { DistributedError } from "./errors.ts";
import type { TcpStoreClient } from "./tcp_store.ts";
import { ByteReader, closeQuietly, connectWithRetry, unrefTimeout, writeAll } from "./_socket.ts";

const MAGIC = 0x454e5554; // "TUNE"
const HEADER_BYTES = 24;
const KIND_DATA = 1;
const KIND_ABORT = 2;
const KIND_BYE = 3;
const KIND_HELLO = 4;

/** One message from a peer. */
interface Frame {
  op: number;
  seq: number;
  payload: Uint8Array;
}

class Peer {
  readonly queue: Frame[] = [];
  #writes: Promise<void> = Promise.resolve();
  said_bye = false;
  /** Its connection closed after it said goodbye: fine unless a collective still needs it. */
  left = false;
  constructor(readonly rank: number, readonly conn: Deno.TcpConn, readonly reader: ByteReader) {}

  /** Queue one frame behind the previous ones (frames never interleave). */
  write(kind: number, op: number, seq: number, payload: Uint8Array): Promise<void> {
    const header = encodeHeader(kind, op, seq, payload.length);
    const p = this.#writes.then(async () => {
      if (payload.length <= 65536) {
        const all = new Uint8Array(HEADER_BYTES + payload.length);
        all.set(header);
        all.set(payload, HEADER_BYTES);
        await writeAll(this.conn, all);
      } else {
        await writeAll(this.conn, header);
        await writeAll(this.conn, payload);
      }
    });
    this.#writes = p.catch(() => {});
    return p;
  }
}

function encodeHeader(kind: number, op: number, seq: number, len: number): Uint8Array {
  const h = new Uint8Array(HEADER_BYTES);
  const dv = new DataView(h.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, kind, true);
  dv.setUint32(8, op, true);
  dv.setUint32(12, seq >>> 0, true);
  dv.setUint32(16, len % 0x100000000, true);
  dv.setUint32(20, Math.floor(len / 0x100000000), true);
  return h;
}

/** What to send to and expect from each peer in one exchange. */
export interface Exchange {
  /** Collective code, checked on receipt so mismatched call orders are caught. */
  op: number;
  /** Name used in error messages, e.g. "allReduceSum". */
  name: string;
  /** Per rank: the payload to send, or null to send nothing (own rank: ignored). */
  send: (Uint8Array | null)[];
  /** Per rank: the payload length expected from it, or -1 to expect nothing. */
  expect: number[];
}

/** Options of `PeerMesh.connect`. */
export interface MeshOptions {
  /** Deadline of every wait, in ms. */
  timeoutMs: number;
  /** Store key prefix for the peer addresses. */
  prefix?: string;
}

/** The full mesh of one rank. Collectives on it must be called in the same order everywhere. */
export class PeerMesh {
  /** Deadline of every wait, in ms; may be changed between calls. */
  timeoutMs: number;
  readonly #peers: (Peer | null)[];
  #failure: DistributedError | null = null;
  #closed = false;
  #seq = 0;
  #chain: Promise<unknown> = Promise.resolve();
  #wake: (() => void) | null = null;

  private constructor(
    readonly rank: number,
    readonly worldSize: number,
    peers: (Peer | null)[],
    timeoutMs: number,
  ) {
    this.#peers = peers;
    this.timeoutMs = timeoutMs;
    for (const p of peers) if (p) this.#readLoop(p);
  }

  /**
   * Connect this rank to every other one: listen on a free port on the interface that
   * reaches the store, publish the address, dial the lower ranks, accept the higher ones.
   */
  static async connect(
    store: TcpStoreClient,
    rank: number,
    worldSize: number,
    opts: MeshOptions,
  ): Promise<PeerMesh> {
    const prefix = opts.prefix ?? "tune/mesh";
    const deadline = Date.now() + opts.timeoutMs;
    const hostname = store.localHostname;
    const listener = Deno.listen({ hostname, port: 0, transport: "tcp" });
    const conns: (Deno.TcpConn | null)[] = new Array(worldSize).fill(null);
    const readers: (ByteReader | null)[] = new Array(worldSize).fill(null);
    try {
      await store.set(
        `${prefix}/addr/${rank}`,
        JSON.stringify({ hostname, port: listener.addr.port }),
      );
      for (let j = 0; j < rank; j++) {
        const addr = JSON.parse(await store.getString(`${prefix}/addr/${j}`));
        // Rank j listens before it publishes its address: retry briefly, for transient errors.
        const soon = Math.min(deadline, Date.now() + 10_000);
        const conn = await connectWithRetry(addr.hostname, addr.port, soon).catch((e) => {
          const loopback = /^(127\.|::1$|localhost$)/.test(addr.hostname);
          throw new DistributedError(
            `rank ${rank} could not connect to rank ${j} at ${addr.hostname}:${addr.port} ` +
              `(${(e as Error).message}); ` +
              (loopback
                ? `rank ${j} reached the master through loopback, so on several nodes set ` +
                  `--master_addr (MASTER_ADDR) to node 0's network address on every node`
                : `is a firewall blocking ports between the nodes?`),
            j,
          );
        });
        conns[j] = conn;
        await writeAll(conn, encodeHeader(KIND_HELLO, rank, worldSize, 0));
      }
      await acceptHigher(listener, conns, readers, rank, deadline, opts.timeoutMs);
    } catch (e) {
      for (const c of conns) closeQuietly(c);
      throw e;
    } finally {
      closeQuietly(listener);
    }
    const peers = conns.map((c, j) => {
      if (c === null) return null;
      c.unref(); // deadline timers keep the process alive while a collective waits
      // The reader that took the hello may already hold the first bytes of data.
      return new Peer(j, c, readers[j] ?? new ByteReader(c));
    });
    return new PeerMesh(rank, worldSize, peers, opts.timeoutMs);
  }

  /** The error that ended this group, or null while it is healthy. */
  get failure(): DistributedError | null {
    return this.#failure;
  }

  /**
   * Run `body` after every collective called before it, with the next sequence number
   * (the same on every rank, since all ranks call collectives in the same order).
   */
  serial(body: (seq: number) => Promise<void>): Promise<void> {
    const seq = ++this.#seq;
    const go = () => body(seq);
    const p = this.#chain.then(go, go);
    this.#chain = p.catch(() => {});
    return p;
  }

  /**
   * Send and receive one round of messages for collective number `seq`; resolves to the
   * payloads received, indexed by rank. Throws `DistributedError` naming the lost or hung
   * rank on failure or after `timeoutMs`.
   */
  async exchange(seq: number, ex: Exchange): Promise<(Uint8Array | null)[]> {
    if (this.#closed) throw new DistributedError("the process group is already closed");
    const W = this.worldSize;
    const received: (Uint8Array | null)[] = new Array(W).fill(null);
    let pendingSends = 0;
    const sentTo = new Array<boolean>(W).fill(true);
    for (let r = 0; r < W; r++) {
      const payload = ex.send[r];
      if (r === this.rank || payload === null) continue;
      pendingSends++;
      sentTo[r] = false;
      this.#peers[r]!.write(KIND_DATA, ex.op, seq, payload).then(
        () => {
          sentTo[r] = true;
          pendingSends--;
          this.#notify();
        },
        (e) =>
          this.#peers[r]!.said_bye
            ? this.fail(this.#leftError(r))
            : this.#peerGone(r, `sending to it failed (${(e as Error).message})`),
      );
    }
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.#notify();
    }, this.timeoutMs);
    try {
      for (;;) {
        // Messages that arrived before a peer left still count: a peer may finish and exit
        // right after its last send.
        let missing = 0;
        for (let r = 0; r < W; r++) {
          if (r === this.rank || ex.expect[r] < 0 || received[r] !== null) continue;
          const f = this.#peers[r]!.queue.shift();
          if (f === undefined) {
            if (this.#peers[r]!.left) throw this.fail(this.#leftError(r));
            missing++;
            continue;
          }
          this.#check(r, f, seq, ex);
          received[r] = f.payload;
        }
        // After a failure, sends to the lost rank never finish; what this rank needed is
        // here all the same, so its result is complete.
        if (missing === 0 && (pendingSends === 0 || this.#failure)) return received;
        if (this.#failure) throw this.#failure;
        if (timedOut) {
          const late: number[] = [];
          for (let r = 0; r < W; r++) {
            if (r === this.rank) continue;
            if ((ex.expect[r] >= 0 && received[r] === null) || !sentTo[r]) late.push(r);
          }
          throw this.fail(
            new DistributedError(
              `rank ${late.join(", rank ")} did not respond within ${this.timeoutMs / 1000} s ` +
                `in ${ex.name} (collective #${seq}) on rank ${this.rank}: it is hung, far ` +
                `slower than the others, or skipped the call (raise TUNE_DIST_TIMEOUT if it is ` +
                `only slow)`,
              late[0],
            ),
          );
        }
        await new Promise<void>((resolve) => (this.#wake = resolve));
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Record `err` as this group's failure (the first one wins), wake any waiting collective,
   * tell the peers which rank was lost, then close the sockets. Returns the recorded error.
   */
  fail(err: DistributedError): DistributedError {
    if (this.#failure) return this.#failure;
    this.#failure = err;
    this.#notify();
    const note = new TextEncoder().encode(
      JSON.stringify({ lostRank: err.lostRank, message: err.message }),
    );
    const notes = this.#peers.map((p) =>
      p && p.rank !== err.lostRank ? p.write(KIND_ABORT, 0, 0, note).catch(() => {}) : null
    );
    // Give the notes a moment to leave, without holding the process open for it.
    const closeAll = () => this.#closeSockets();
    Promise.all(notes).then(closeAll);
    unrefTimeout(closeAll, 2000);
    return err;
  }

  /** Say goodbye to every peer and close the connections; later collectives throw. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#failure) {
      const byes = this.#peers.map((p) => p?.write(KIND_BYE, 0, 0, new Uint8Array(0)));
      let t: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled(byes),
        new Promise((r) => (t = setTimeout(r, 2000))),
      ]);
      clearTimeout(t);
    }
    this.#closeSockets();
  }

  #closeSockets(): void {
    for (const p of this.#peers) if (p) closeQuietly(p.conn);
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  #check(r: number, f: Frame, seq: number, ex: Exchange): void {
    if (f.op !== ex.op || f.seq !== seq) {
      throw this.fail(
        new DistributedError(
          `ranks called collectives in different orders: rank ${this.rank} is in ${ex.name} ` +
            `(collective #${seq}) but rank ${r} sent ${opName(f.op)} (collective #${f.seq}); ` +
            `every rank must call the same collectives in the same order`,
        ),
      );
    }
    if (f.payload.length !== ex.expect[r]) {
      throw this.fail(
        new DistributedError(
          `buffer sizes differ across ranks in ${ex.name} (collective #${seq}): rank ${r} sent ` +
            `${f.payload.length} bytes, rank ${this.rank} expected ${ex.expect[r]}`,
        ),
      );
    }
  }

  #peerGone(r: number, why: string): void {
    if (this.#failure || this.#closed) return;
    const peer = this.#peers[r]!;
    if (peer.said_bye) {
      // A clean goodbye after its last collective: the others may still be finishing that
      // collective among themselves, so only one that needs this rank fails (exchange).
      peer.left = true;
      this.#notify();
      return;
    }
    this.fail(
      new DistributedError(
        `rank ${r} was lost: ${why}; the process exited, crashed or was killed — see its ` +
          `output for the cause`,
        r,
      ),
    );
  }

  #leftError(r: number): DistributedError {
    return new DistributedError(
      `rank ${r} already left the process group (it finished or closed it) while rank ` +
        `${this.rank} still needs it; the ranks took different code paths`,
      r,
    );
  }

  async #readLoop(peer: Peer): Promise<void> {
    const header = new Uint8Array(HEADER_BYTES);
    const dv = new DataView(header.buffer);
    try {
      for (;;) {
        if (!(await peer.reader.readExact(header))) {
          this.#peerGone(peer.rank, "its connection closed");
          return;
        }
        if (dv.getUint32(0, true) !== MAGIC) throw new Error("garbled message header");
        const kind = dv.getUint32(4, true);
        const len = dv.getUint32(16, true) + dv.getUint32(20, true) * 0x100000000;
        const payload = new Uint8Array(len);
        if (!(await peer.reader.readExact(payload))) throw new Error("closed mid-message");
        if (kind === KIND_DATA) {
          peer.queue.push({ op: dv.getUint32(8, true), seq: dv.getUint32(12, true), payload });
          this.#notify();
        } else if (kind === KIND_BYE) {
          peer.said_bye = true;
        } else if (kind === KIND_ABORT) {
          const note = JSON.parse(new TextDecoder().decode(payload));
          const lost = note.lostRank as number;
          this.fail(
            new DistributedError(
              lost >= 0
                ? `${note.message} [reported by rank ${peer.rank}]`
                : `rank ${peer.rank} stopped the job: ${note.message}`,
              lost >= 0 ? lost : peer.rank,
            ),
          );
          return;
        }
      }
    } catch (e) {
      this.#peerGone(peer.rank, `its connection failed (${(e as Error).message})`);
    }
  }
}

async function acceptHigher(
  listener: Deno.TcpListener,
  conns: (Deno.TcpConn | null)[],
  readers: (ByteReader | null)[],
  rank: number,
  deadline: number,
  timeoutMs: number,
): Promise<void> {
  const worldSize = conns.length;
  let remaining = worldSize - 1 - rank;
  let current: Deno.TcpConn | null = null;
  let expired = false;
  const timer = setTimeout(() => {
    expired = true;
    closeQuietly(listener);
    closeQuietly(current); // a connection that never says hello
  }, Math.max(0, deadline - Date.now()));
  try {
    while (remaining > 0) {
      let conn: Deno.TcpConn | null = null;
      try {
        conn = await listener.accept();
      } catch {
        // closed by the timer
      }
      if (conn === null || expired) {
        closeQuietly(conn);
        const missing = [];
        for (let j = rank + 1; j < worldSize; j++) if (conns[j] === null) missing.push(j);
        throw new DistributedError(
          `rank ${rank} waited ${timeoutMs / 1000} s for rank ${missing.join(", rank ")} to ` +
            `connect; it did not start, crashed, or cannot reach this host`,
          missing[0],
        );
      }
      current = conn;
      conn.setNoDelay(true);
      const hello = new Uint8Array(HEADER_BYTES);
      const reader = new ByteReader(conn);
      const ok = await reader.readExact(hello).catch(() => false);
      current = null;
      const dv = new DataView(hello.buffer);
      const from = dv.getUint32(8, true);
      if (
        !ok || dv.getUint32(0, true) !== MAGIC || dv.getUint32(4, true) !== KIND_HELLO ||
        dv.getUint32(12, true) !== worldSize || from <= rank || from >= worldSize ||
        conns[from] !== null
      ) {
        closeQuietly(conn); // a stray or stale connection: not one of ours
        continue;
      }
      conns[from] = conn;
      readers[from] = reader;
      remaining--;
    }
  } finally {
    clearTimeout(timer);
  }
}

const OP_NAMES: Record<number, string> = {};

/** Register a readable name for a collective code (used in mismatch messages). */
export function nameOp(op: number, name: string): void {
  OP_NAMES[op] = name;
}

function opName(op: number): string {
  return OP_NAMES[op] ?? `collective code ${op}`;
}
