/**
 * `_component_` builders of src/training, registered with src/config/registry.ts.
 * Imported (for its side effect) by src/components.ts.
 */
import { TuneError } from "../errors.ts";
import { registerComponent } from "../config/registry.ts";
import type { ComponentSpec } from "../config/schema.ts";
import { DiskLogger, type MetricLogger, StdoutLogger } from "./metric_logging.ts";
import { TensorBoardLogger } from "./tensorboard.ts";

/**
 * Register torchtune's metric logger `cls` (torchtune.training.metric_logging.<cls>), also under
 * its older torchtune.utils name and, with `tuneAlias`, as tune.training.<cls>.
 */
function registerLogger(
  cls: string,
  tuneAlias: boolean,
  spec: Pick<ComponentSpec<MetricLogger>, "doc" | "params" | "build">,
): void {
  const aliases = [`torchtune.utils.metric_logging.${cls}`];
  if (tuneAlias) aliases.push(`tune.training.${cls}`);
  registerComponent<MetricLogger>({
    name: `torchtune.training.metric_logging.${cls}`,
    aliases,
    kind: "metric_logger",
    ...spec,
  });
}

registerLogger("DiskLogger", true, {
  doc: "appends one JSON record per logged step to <log_dir>/metrics.jsonl",
  params: {
    log_dir: { type: "string", required: true, doc: "directory for metrics.jsonl" },
    filename: {
      type: "string",
      default: null,
      doc: "accepted for torchtune configs; ignored (the file is always metrics.jsonl)",
    },
  },
  build: (args) => new DiskLogger(args.log_dir as string),
});

registerLogger("StdoutLogger", true, {
  doc: "prints one line of metrics per logged step",
  params: {},
  build: () => new StdoutLogger(),
});

registerLogger("TensorBoardLogger", true, {
  doc: "writes scalars as TensorBoard event files (view with tensorboard --logdir <log_dir>)",
  params: {
    log_dir: { type: "string", required: true, doc: "TensorBoard log directory" },
    organize_logs: {
      type: "bool",
      default: true,
      doc: "write under <log_dir>/run_<rank>_<unix time>, one folder per run",
    },
  },
  build: (args) =>
    new TensorBoardLogger(args.log_dir as string, { organizeLogs: args.organize_logs as boolean }),
});

/**
 * torchtune's WandBLogger: accepted in a config (so `tune validate` passes torchtune's configs
 * that name it) and refused in one line when the run builds it, before any step: Weights &
 * Biases is a hosted service tune has no client for.
 */
registerLogger("WandBLogger", false, {
  doc: "Weights & Biases: refused when the run starts (no client here; use TensorBoardLogger)",
  params: {
    project: { type: "string", default: "torchtune", doc: "W&B project" },
    entity: { type: "string", default: null, doc: "W&B entity" },
    group: { type: "string", default: null, doc: "W&B group" },
    log_dir: { type: "string", default: null, doc: "local directory" },
  },
  build: () => {
    throw new TuneError(
      "metric_logger WandBLogger is not available (tune has no Weights & Biases client); use " +
        "metric_logger._component_=torchtune.training.metric_logging.TensorBoardLogger " +
        "(view with tensorboard --logdir) or DiskLogger",
    );
  },
});
