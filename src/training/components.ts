/**
 * `_component_` builders of src/training, registered with src/config/registry.ts.
 * Imported (for its side effect) by src/components.ts.
 */
import { TuneError } from "../errors.ts";
import { registerComponent } from "../config/registry.ts";
import { DiskLogger, type MetricLogger, StdoutLogger } from "./metric_logging.ts";
import { TensorBoardLogger } from "./tensorboard.ts";

registerComponent<MetricLogger>({
  name: "torchtune.training.metric_logging.DiskLogger",
  aliases: ["torchtune.utils.metric_logging.DiskLogger", "tune.training.DiskLogger"],
  kind: "metric_logger",
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

registerComponent<MetricLogger>({
  name: "torchtune.training.metric_logging.StdoutLogger",
  aliases: ["torchtune.utils.metric_logging.StdoutLogger", "tune.training.StdoutLogger"],
  kind: "metric_logger",
  doc: "prints one line of metrics per logged step",
  params: {},
  build: () => new StdoutLogger(),
});

registerComponent<MetricLogger>({
  name: "torchtune.training.metric_logging.TensorBoardLogger",
  aliases: ["torchtune.utils.metric_logging.TensorBoardLogger", "tune.training.TensorBoardLogger"],
  kind: "metric_logger",
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
registerComponent<MetricLogger>({
  name: "torchtune.training.metric_logging.WandBLogger",
  aliases: ["torchtune.utils.metric_logging.WandBLogger"],
  kind: "metric_logger",
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
