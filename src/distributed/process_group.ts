/**
 * The job's process group: rank discovery, the rendezvous store and the peer mesh.
 *
 * A recipe calls `initProcessGroup()` once at start. In a job of one it connects nothing.
 * Otherwise rank 0 serves the TCP store at MASTER_ADDR:MASTER_PORT, every rank connects to
 * it, the ranks open direct connections to each other (the mesh) and meet in a barrier.
 * `cpuCollectives(access)` then gives the `Collectives` for the CPU backend; the NCCL
 * path uses `store` to share its unique id.
 */
import { type Collectives, type DeviceBuffer, SingleProcessCollectives } from "../backend/ops.ts";
import { discoverRank, distInitTimeoutMs, distTimeoutMs, type Env, type RankInfo } from "./env.ts";
import type { HostAccess } from "./host_access.ts";
import { PeerMesh } from "./mesh.ts";
import { TcpCollectives } from "./tcp_collectives.ts";
import { TcpStoreClient, TcpStoreServer } from "./tcp_store.ts";

/** Options of `initProcessGroup`. */
export interface ProcessGroupOptions {
  /** Environment to read the rank from (default: the process environment). */
  env?: Env;
  /** Deadline of every collective's wait in ms (default: TUNE_DIST_TIMEOUT or 120 s). */
  timeoutMs?: number;
  /** Deadline for all ranks to join, in ms (default: TUNE_DIST_INIT_TIMEOUT or 300 s). */
  initTimeoutMs?: number;
}

/** This process's membership in the job. */
export class ProcessGroup {
  #collectives: TcpCollectives | null = null;

  private constructor(
    /** Rank, world size, node and rendezvous address. */
    readonly info: RankInfo,
    /** The rendezvous store client (null in a job of one). */
    readonly store: TcpStoreClient | null,
    /** Direct connections to the other ranks (null in a job of one). */
    readonly mesh: PeerMesh | null,
    private readonly server: TcpStoreServer | null,
  ) {}

  /** Connect to the job described by the environment (see `discoverRank`). */
  static async init(opts: ProcessGroupOptions = {}): Promise<ProcessGroup> {
    const env = opts.env ?? Deno.env.toObject();
    const info = discoverRank(env);
    const timeoutMs = opts.timeoutMs ?? distTimeoutMs(env);
    const initTimeoutMs = opts.initTimeoutMs ?? distInitTimeoutMs(env);
    if (info.worldSize === 1) return new ProcessGroup(info, null, null, null);
    // Rank 0 listens on every interface so the other nodes reach it whatever name
    // MASTER_ADDR uses; an IPv6 address needs an IPv6 listener.
    const server = info.rank === 0
      ? TcpStoreServer.listen(info.masterAddr.includes(":") ? "::" : "0.0.0.0", info.masterPort)
      : null;
    let store: TcpStoreClient | null = null;
    try {
      store = await TcpStoreClient.connect(info.masterAddr, info.masterPort, {
        timeoutMs: initTimeoutMs,
        who: `rank ${info.rank}`,
      });
      const mesh = await PeerMesh.connect(store, info.rank, info.worldSize, {
        timeoutMs: initTimeoutMs,
      });
      const group = new ProcessGroup(info, store, mesh, server);
      // Every link works and every rank is here before anyone returns.
      await group.#tcp().barrier();
      mesh.timeoutMs = timeoutMs;
      store.timeoutMs = timeoutMs;
      return group;
    } catch (e) {
      store?.close();
      server?.close();
      throw e;
    }
  }

  get rank(): number {
    return this.info.rank;
  }
  get localRank(): number {
    return this.info.localRank;
  }
  get worldSize(): number {
    return this.info.worldSize;
  }
  /** True on rank 0, the rank that logs, saves checkpoints and prints progress. */
  get isMain(): boolean {
    return this.info.rank === 0;
  }

  /**
   * The collectives for a backend whose buffers are reached through `access` (see
   * host_access.ts): TCP between the processes, or the single-process no-ops in a job of
   * one. All calls share one sequence, so use one object per group.
   */
  cpuCollectives(access: HostAccess): Collectives {
    if (this.mesh === null) {
      return new SingleProcessCollectives((dst: DeviceBuffer, src: DeviceBuffer) =>
        access.write(dst, access.read(src))
      );
    }
    return new TcpCollectives(this.mesh, access);
  }

  /** Host-level barrier over the mesh (no buffers; a no-op in a job of one). */
  async barrier(): Promise<void> {
    if (this.mesh) await this.#tcp().barrier();
  }

  /** Leave the group: close the mesh, the store connection and (rank 0) the store. */
  async close(): Promise<void> {
    await this.mesh?.close();
    this.store?.close();
    this.server?.close();
  }

  #tcp(): TcpCollectives {
    const none: HostAccess = {
      read: () => {
        throw new Error("the group's own barrier reads no buffers");
      },
      write: () => {},
    };
    return (this.#collectives ??= new TcpCollectives(this.mesh!, none));
  }
}

/** Shorthand for `ProcessGroup.init(opts)`. */
export function initProcessGroup(opts: ProcessGroupOptions = {}): Promise<ProcessGroup> {
  return ProcessGroup.init(opts);
}
