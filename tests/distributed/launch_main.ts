/**
 * A main module that launches copies of itself, as `tune --nproc_per_node N` does:
 * `launch_main.ts launch N <args...>` starts N children running `launch_main.ts <args...>`
 * through `selfCommand()`; without "launch" it runs print_env.ts's body.
 */
import { launch } from "../../src/distributed/launch.ts";

if (Deno.args[0] === "launch") {
  const n = Number(Deno.args[1]);
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const code = await launch(
    { nnodes: 1, nprocPerNode: n, nodeRank: 0, masterAddr: "127.0.0.1", masterPort: port },
    Deno.args.slice(2),
  );
  Deno.exit(code);
} else {
  await import("./print_env.ts");
}
