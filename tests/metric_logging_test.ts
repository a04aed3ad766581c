/** Metric loggers: DiskLogger's metrics.jsonl and the registered component names. */
import assert from "node:assert/strict";
import "../src/training/components.ts";
import { instantiate } from "../src/config/instantiate.ts";
import { resolveComponent } from "../src/config/resolve.ts";
import {
  DiskLogger,
  formatMetric,
  type MetricLogger,
  readMetrics,
} from "../src/training/metric_logging.ts";

Deno.test("DiskLogger appends one JSON record per logDict call to metrics.jsonl", () => {
  const dir = Deno.makeTempDirSync({ prefix: "tune_metrics_" });
  try {
    const logger = new DiskLogger(`${dir}/logs`);
    logger.logDict({ loss: 2.5, lr: 3e-4 }, 1);
    logger.log("loss", 2.25, 2);
    logger.logConfig({ batch_size: 2 });
    logger.close();
    assert.equal(logger.path, `${dir}/logs/metrics.jsonl`);
    assert.deepEqual(readMetrics(logger.path), [
      { step: 1, loss: 2.5, lr: 3e-4 },
      { step: 2, loss: 2.25 },
    ]);
    assert.deepEqual(JSON.parse(Deno.readTextFileSync(`${dir}/logs/config.json`)), {
      batch_size: 2,
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("torchtune.training.metric_logging.DiskLogger builds from a config section", () => {
  const dir = Deno.makeTempDirSync({ prefix: "tune_metrics_" });
  try {
    const section = resolveComponent(
      "metric_logger",
      { _component_: "torchtune.utils.metric_logging.DiskLogger", log_dir: dir },
      "metric_logger",
      { recipe: "test", prefix: "" },
    );
    assert.equal(section._component_, "torchtune.training.metric_logging.DiskLogger");
    const logger = instantiate<MetricLogger>(section);
    assert.ok(logger instanceof DiskLogger);
    logger.log("loss", 1, 0);
    assert.deepEqual(readMetrics(`${dir}/metrics.jsonl`), [{ step: 0, loss: 1 }]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("formatMetric() prints integers whole and other values with 6 significant digits", () => {
  assert.equal(formatMetric(12), "12");
  assert.equal(formatMetric(2.3456789), "2.34568");
  assert.equal(formatMetric(3e-4), "0.000300000");
});
