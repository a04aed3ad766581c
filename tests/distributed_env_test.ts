/** Rank discovery from the variables of torchrun, SLURM, Open MPI and MPICH. */
import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import {
  cudaDeviceOrdinal,
  discoverRank,
  distInitTimeoutMs,
  distTimeoutMs,
  expandTasksPerNode,
  firstHost,
} from "../src/distributed/env.ts";
import { TuneError } from "../src/errors.ts";

Deno.test("`discoverRank()` is a job of one when no launcher variables are set", () => {
  assertEquals(discoverRank({ PATH: "/usr/bin" }), {
    rank: 0,
    localRank: 0,
    worldSize: 1,
    localWorldSize: 1,
    nodeRank: 0,
    masterAddr: "127.0.0.1",
    masterPort: 29500,
    source: "single",
  });
});

Deno.test("`discoverRank()` reads torchrun's variables", () => {
  assertEquals(
    discoverRank({
      RANK: "5",
      LOCAL_RANK: "1",
      WORLD_SIZE: "8",
      LOCAL_WORLD_SIZE: "4",
      GROUP_RANK: "1",
      MASTER_ADDR: "10.0.0.7",
      MASTER_PORT: "29600",
      // torchrun wins over the SLURM variables of the allocation it runs in
      SLURM_PROCID: "0",
      SLURM_NTASKS: "2",
    }),
    {
      rank: 5,
      localRank: 1,
      worldSize: 8,
      localWorldSize: 4,
      nodeRank: 1,
      masterAddr: "10.0.0.7",
      masterPort: 29600,
      source: "torchrun",
    },
  );
});

Deno.test("`discoverRank()` fills torchrun's optional variables when they are missing", () => {
  const info = discoverRank({ RANK: "2", WORLD_SIZE: "3" });
  assertEquals([info.localRank, info.localWorldSize, info.nodeRank], [2, 3, 0]);
  assertEquals([info.masterAddr, info.masterPort], ["127.0.0.1", 29500]);
});

Deno.test("`discoverRank()` reads SLURM's variables and takes the master from the node list", () => {
  const info = discoverRank({
    SLURM_PROCID: "6",
    SLURM_LOCALID: "2",
    SLURM_NTASKS: "8",
    SLURM_NODEID: "1",
    SLURM_TASKS_PER_NODE: "4(x2)",
    SLURM_STEP_NODELIST: "gpu[07-08]",
    SLURM_LAUNCH_NODE_IPADDR: "10.1.1.1",
    SLURM_JOB_ID: "123456",
  });
  assertEquals(info, {
    rank: 6,
    localRank: 2,
    worldSize: 8,
    localWorldSize: 4,
    nodeRank: 1,
    masterAddr: "gpu07",
    masterPort: 20000 + 3456,
    source: "slurm",
  });
});

Deno.test("`discoverRank()` prefers MASTER_ADDR/PORT and the step's task count under SLURM", () => {
  const info = discoverRank({
    SLURM_PROCID: "1",
    SLURM_LOCALID: "1",
    SLURM_NTASKS: "16",
    SLURM_STEP_NUM_TASKS: "2",
    SLURM_NTASKS_PER_NODE: "2",
    SLURM_LAUNCH_NODE_IPADDR: "10.1.1.1",
    MASTER_ADDR: "node3",
    MASTER_PORT: "4000",
  });
  assertEquals(
    [info.rank, info.worldSize, info.localWorldSize, info.masterAddr, info.masterPort],
    [1, 2, 2, "node3", 4000],
  );
  const launchNode = discoverRank({
    SLURM_PROCID: "0",
    SLURM_NTASKS: "2",
    SLURM_LAUNCH_NODE_IPADDR: "10.1.1.1",
  });
  assertEquals(launchNode.masterAddr, "10.1.1.1");
});

Deno.test("`discoverRank()` reads Open MPI's variables", () => {
  assertEquals(
    discoverRank({
      OMPI_COMM_WORLD_RANK: "3",
      OMPI_COMM_WORLD_LOCAL_RANK: "1",
      OMPI_COMM_WORLD_SIZE: "4",
      OMPI_COMM_WORLD_LOCAL_SIZE: "2",
      MASTER_ADDR: "host0",
      SLURM_PROCID: "0",
      SLURM_NTASKS: "1",
    }),
    {
      rank: 3,
      localRank: 1,
      worldSize: 4,
      localWorldSize: 2,
      nodeRank: 1,
      masterAddr: "host0",
      masterPort: 29500,
      source: "mpi",
    },
  );
});

Deno.test("`discoverRank()` uses loopback for single-node mpirun and MPICH's PMI variables", () => {
  const ompi = discoverRank({
    OMPI_COMM_WORLD_RANK: "1",
    OMPI_COMM_WORLD_LOCAL_RANK: "1",
    OMPI_COMM_WORLD_SIZE: "2",
    OMPI_COMM_WORLD_LOCAL_SIZE: "2",
  });
  assertEquals([ompi.rank, ompi.masterAddr], [1, "127.0.0.1"]);
  const pmi = discoverRank({
    PMI_RANK: "2",
    PMI_SIZE: "3",
    MPI_LOCALRANKID: "2",
    MPI_LOCALNRANKS: "3",
  });
  assertEquals([pmi.rank, pmi.localRank, pmi.worldSize, pmi.source], [2, 2, 3, "mpi"]);
});

Deno.test("`discoverRank()` throws TuneError on malformed or inconsistent variables", () => {
  assertThrows(() => discoverRank({ RANK: "x", WORLD_SIZE: "2" }), TuneError);
  assertThrows(
    () => discoverRank({ RANK: "2", WORLD_SIZE: "2" }),
    /rank 2 is not below world size 2/,
  );
  assertThrows(
    () => discoverRank({ RANK: "0", WORLD_SIZE: "2", MASTER_PORT: "70000" }),
    /MASTER_PORT/,
  );
  assertThrows(
    () =>
      discoverRank({
        OMPI_COMM_WORLD_RANK: "0",
        OMPI_COMM_WORLD_SIZE: "4",
        OMPI_COMM_WORLD_LOCAL_SIZE: "2",
      }),
    /set MASTER_ADDR/,
  );
});

Deno.test("`firstHost()` and `expandTasksPerNode()` read SLURM's compressed lists", () => {
  assertEquals(firstHost("gpu[07-09,12],cpu1"), "gpu07");
  assertEquals(firstHost("a1,b2"), "a1");
  assertEquals(firstHost("n[3,5]-ib"), "n3-ib");
  assertEquals(expandTasksPerNode("2(x3),1"), [2, 2, 2, 1]);
  assertThrows(() => expandTasksPerNode("2x"), TuneError);
});

Deno.test("`distTimeoutMs()` reads TUNE_DIST_TIMEOUT in seconds", () => {
  assertEquals(distTimeoutMs({}), 120_000);
  assertEquals(distTimeoutMs({ TUNE_DIST_TIMEOUT: "2.5" }), 2500);
  assertEquals(distInitTimeoutMs({ TUNE_DIST_INIT_TIMEOUT: "9" }), 9000);
  assertThrows(() => distTimeoutMs({ TUNE_DIST_TIMEOUT: "-1" }), TuneError);
});

Deno.test("`cudaDeviceOrdinal()` picks LOCAL_RANK, or 0 when one GPU is visible", () => {
  const info = discoverRank({ RANK: "3", LOCAL_RANK: "1", WORLD_SIZE: "4", LOCAL_WORLD_SIZE: "2" });
  assertEquals(cudaDeviceOrdinal(info, 8), 1);
  assertEquals(cudaDeviceOrdinal(info, 1), 0);
  const far = discoverRank({ RANK: "3", LOCAL_RANK: "3", WORLD_SIZE: "4" });
  assertThrows(() => cudaDeviceOrdinal(far, 2), /only 2 are visible/);
});
