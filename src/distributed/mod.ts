/**
 * Distributed training: rank discovery, the launcher, the rendezvous store and the
 * collectives (TCP between processes on the CPU, NCCL on GPUs).
 *
 * A distributed recipe:
 *
 *   const group = await initProcessGroup();          // reads RANK/WORLD_SIZE/... (or SLURM, mpirun)
 *   // CPU:
 *   const backend = new CpuBackend({
 *     collectives: group.cpuCollectives(viewHostAccess((b) => (b as CpuBuffer).data)),
 *   });
 *   // CUDA:
 *   const nccl = new NcclCollectives(group);
 *   const backend = createCudaBackend({ device: cudaDeviceOrdinal(group.info, n), collectives: nccl });
 *   await nccl.init();
 *   ...
 *   if (group.isMain) log(...);                      // rank 0 logs, saves and prints progress
 *   await backend.collectives.allReduceSum(grads);   // same calls, same order, on every rank
 *   ...
 *   await group.close();
 *
 * `tune --nproc_per_node N <recipe> ...` starts the processes (`launch`); torchrun, srun
 * and mpirun work too. TUNE_DIST_TIMEOUT (s, default 120) bounds every wait of a
 * collective, TUNE_DIST_INIT_TIMEOUT (s, default 300) the start-up.
 */
export { DistributedError } from "./errors.ts";
export {
  cudaDeviceOrdinal,
  DEFAULT_INIT_TIMEOUT_MS,
  DEFAULT_MASTER_PORT,
  DEFAULT_TIMEOUT_MS,
  discoverRank,
  distInitTimeoutMs,
  distTimeoutMs,
  type Env,
  type RankInfo,
  type RankSource,
} from "./env.ts";
export { backendHostAccess, type HostAccess, viewHostAccess } from "./host_access.ts";
export {
  launch,
  type LaunchConfig,
  type LaunchExtras,
  needsLaunch,
  rankEnv,
  type Runtime,
  selfCommand,
} from "./launch.ts";
export { NcclCollectives, type NcclRendezvous } from "../backend/cuda/nccl_collectives.ts";
export { initProcessGroup, ProcessGroup, type ProcessGroupOptions } from "./process_group.ts";
export { type FlatShard, flatShard } from "./sharding.ts";
export { TcpCollectives } from "./tcp_collectives.ts";
export { type StoreClientOptions, TcpStoreClient, TcpStoreServer } from "./tcp_store.ts";
