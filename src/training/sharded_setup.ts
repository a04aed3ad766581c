/**
 * Start-up of the distributed recipes: join the job's process group and build the backend
 * with the job's collectives (TCP over loopback/the network on the CPU, NCCL on GPUs), and
 * small agreements between ranks (the seed).
 */
import type { Backend } from "../backend/ops.ts";
import type { CpuBuffer } from "../backend/cpu/buffer.ts";
import { createBackend } from "../backend/select.ts";
import { visibleGpuCount } from "../backend/cuda/device.ts";
import { NcclCollectives } from "../backend/cuda/nccl_collectives.ts";
import { cudaDeviceOrdinal, distInitTimeoutMs } from "../distributed/env.ts";
import { viewHostAccess } from "../distributed/host_access.ts";
import { initProcessGroup, type ProcessGroup } from "../distributed/process_group.ts";

/** This process's place in the job and its backend. */
export interface DistributedRuntime {
  group: ProcessGroup;
  /** The backend; `backend.collectives` spans the group. */
  backend: Backend;
}

/**
 * Join the job described by the environment (RANK, WORLD_SIZE, MASTER_ADDR, ... as set by
 * `tune --nproc_per_node`, torchrun, SLURM or mpirun; a job of one without them) and build
 * the backend of `device`: on the CPU the collectives go over TCP between the processes;
 * on CUDA each rank opens GPU LOCAL_RANK and the collectives are NCCL.
 */
export async function setupDistributed(device: "cpu" | "cuda"): Promise<DistributedRuntime> {
  const group = await initProcessGroup();
  try {
    if (device === "cpu") {
      const collectives = group.cpuCollectives(viewHostAccess((b) => (b as CpuBuffer).data));
      return { group, backend: await createBackend("cpu", { collectives }) };
    }
    const nccl = new NcclCollectives(group);
    // GPU LOCAL_RANK when every process sees all of the node's GPUs (the launcher,
    // torchrun), GPU 0 when a scheduler pins one per process; TUNE_CUDA_DEVICE overrides.
    // The backend makes it current, and NCCL's communicator is made on it.
    const pinned = Deno.env.get("TUNE_CUDA_DEVICE");
    const ordinal = pinned !== undefined && /^\d+$/.test(pinned)
      ? Number(pinned)
      : cudaDeviceOrdinal(group.info, visibleGpuCount());
    const { createCudaBackend } = await import("../backend/cuda/backend.ts");
    const backend = createCudaBackend({ device: ordinal, collectives: nccl });
    await nccl.init();
    return { group, backend };
  } catch (e) {
    await group.close();
    throw e;
  }
}

/** Rank 0's value of a non-negative 31-bit integer (e.g. a seed picked at random), on every rank. */
export async function broadcastInt(backend: Backend, value: number): Promise<number> {
  const buf = backend.alloc(1, "i32"); // (1)
  try {
    backend.upload(buf, Int32Array.of(value));
    await backend.collectives.broadcast(buf, 0);
    return (backend.download(buf) as Int32Array)[0];
  } finally {
    backend.free(buf);
  }
}

/**
 * A barrier where the other ranks wait for rank 0 to write a checkpoint: its deadline is
 * TUNE_DIST_INIT_TIMEOUT (default 300 s) when that is longer than TUNE_DIST_TIMEOUT, since
 * writing a big model takes longer than any collective.
 */
export async function barrierAfterSave(group: ProcessGroup): Promise<void> {
  const mesh = group.mesh;
  if (!mesh) return;
  const before = mesh.timeoutMs;
  mesh.timeoutMs = Math.max(before, distInitTimeoutMs(Deno.env.toObject()));
  try {
    await group.barrier();
  } finally {
    mesh.timeoutMs = before;
  }
}
