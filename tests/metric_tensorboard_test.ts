/**
 * TensorBoardLogger: byte-for-byte parity with an event file written by google.protobuf and
 * an independent bitwise CRC32C (tests/reference/tensorboard_reference.py, committed as
 * tests/fixtures/tensorboard_reference.tfevents; this test never runs Python), the reader,
 * the run folder and file name, the registered component and bad log_dir errors.
 * Tolerances: bytes are compared exactly; read-back values exactly against Math.fround.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import "../src/training/components.ts";
import { instantiate } from "../src/config/instantiate.ts";
import { resolveComponent } from "../src/config/resolve.ts";
import { TuneError } from "../src/errors.ts";
import type { MetricLogger } from "../src/training/metric_logging.ts";
import {
  crc32c,
  readEventFile,
  TensorBoardLogger,
  type TfEvent,
} from "../src/training/tensorboard.ts";

const FIXTURE = new URL("./fixtures/tensorboard_reference.tfevents", import.meta.url);

// Must equal START_WALL and CALLS in tests/reference/tensorboard_reference.py.
const START_WALL = 1700000000.25;
const CALLS: Array<[number, number, Record<string, number>]> = [
  [1700000001.5, 0, { loss: 2.5, lr: 3e-4 }],
  [1700000002.75, 1, { loss: 2.25, "rewards/chosen": -1.75, "rewards/rejected": 0.0 }],
  [1700000003.125, 2, { "train/tiny": 1e-30, "train/subnormal": 1e-40, "train/large": 3.0e38 }],
  [1700000004.0625, 7, { grad_norm: 123456.789, nan_loss: NaN, inf: Infinity }],
  [1700000005.5, 2 ** 40 + 3, { tokens_per_second_per_gpu: 4321.0, "ünï/ß": -0.125 }],
];

/** A clock that returns the given times in order. */
function clock(times: number[]): () => number {
  let i = 0;
  return () => {
    assert.ok(i < times.length, "the logger asked for more wall times than the test has");
    return times[i++];
  };
}

function withTempDir(fn: (dir: string) => void): void {
  const dir = Deno.makeTempDirSync({ prefix: "tune_tb_" });
  try {
    fn(dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

function assertOneLineTuneError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TuneError, `expected TuneError, got ${e}`);
    assert.ok(!e.message.includes("\n"), `message is not one line: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("crc32c() gives the CRC-32C check value 0xE3069283 for '123456789'", () => {
  assert.equal(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(0)), 0);
});

Deno.test("TensorBoardLogger writes the reference event file byte for byte with fixed wall times", () => {
  withTempDir((dir) => {
    const logger = new TensorBoardLogger(dir, {
      organizeLogs: false,
      rank: 0,
      now: clock([START_WALL, ...CALLS.map((c) => c[0])]),
    });
    for (const [, step, metrics] of CALLS) {
      const names = Object.keys(metrics);
      // Both entry points: log() for a single scalar, logDict() for several.
      if (names.length === 1) logger.log(names[0], metrics[names[0]], step);
      else logger.logDict(metrics, step);
    }
    logger.close();
    const expected = Deno.readFileSync(FIXTURE);
    const actual = Deno.readFileSync(logger.path!);
    assert.equal(actual.length, expected.length, "file length");
    const first = actual.findIndex((b, i) => b !== expected[i]);
    assert.equal(first, -1, `first differing byte at offset ${first}`);
  });
});

Deno.test("readEventFile() checks every CRC and reads back the reference values", () => {
  const bytes = Deno.readFileSync(FIXTURE);
  const events = readEventFile(bytes);
  const expected: TfEvent[] = [{ wallTime: START_WALL, step: 0, fileVersion: "brain.Event:2" }];
  for (const [wallTime, step, metrics] of CALLS) {
    for (const [tag, v] of Object.entries(metrics)) {
      expected.push({ wallTime, step, values: [{ tag, simpleValue: Math.fround(v) }] });
    }
  }
  assert.equal(events.length, 14);
  // deepEqual compares NaN with Object.is, so the NaN loss matches NaN.
  assert.deepEqual(events, expected);
  assert.equal(events[7].values![0].simpleValue, Math.fround(1e-40)); // subnormal survives

  // One flipped bit in the last record's data, then in the first record's length.
  const bad = bytes.slice();
  bad[bad.length - 6] ^= 1;
  assert.throws(() => readEventFile(bad), /event record 13: data CRC mismatch/);
  const bad2 = bytes.slice();
  bad2[0] ^= 1;
  assert.throws(() => readEventFile(bad2), /event record 0: length CRC mismatch/);
  assert.throws(() => readEventFile(bytes.subarray(0, bytes.length - 3)), /truncated data/);
});

Deno.test("TensorBoardLogger puts each run under run_<rank>_<time> and appends on every logDict", () => {
  withTempDir((dir) => {
    const logger = new TensorBoardLogger(`${dir}/logs`, {
      rank: 0,
      now: clock([1712345678.5, 1712345679, 1712345680]),
    });
    assert.equal(logger.logDir, join(dir, "logs", "run_0_1712345678.5"));
    const name = logger.path!.slice(logger.logDir.length + 1);
    const m = name.match(/^events\.out\.tfevents\.(\d{10})\.(.+)\.(\d+)\.(\d+)$/);
    assert.ok(m, `file name ${name}`);
    assert.equal(m[1], "1712345678");
    assert.equal(m[2], Deno.hostname());
    assert.equal(Number(m[3]), Deno.pid);
    // Readable after each call, before close (nothing is held back in memory).
    logger.logDict({ loss: 1.5, lr: 1e-3 }, 1);
    assert.equal(readEventFile(Deno.readFileSync(logger.path!)).length, 3);
    logger.log("loss", 1.25, 2);
    const events = readEventFile(Deno.readFileSync(logger.path!));
    assert.deepEqual(events.at(-1), {
      wallTime: 1712345680,
      step: 2,
      values: [{ tag: "loss", simpleValue: 1.25 }],
    });
    logger.close();
    logger.log("loss", 1, 3); // after close: nothing, as torchtune's closed writer
    assert.equal(readEventFile(Deno.readFileSync(logger.path!)).length, 4);

    // A second writer in this process gets the next counter value in its name.
    const second = new TensorBoardLogger(`${dir}/logs`, { rank: 0, now: () => 1712345690 });
    assert.equal(Number(second.path!.split(".").at(-1)), Number(m[4]) + 1);
  });
});

Deno.test("TensorBoardLogger on a rank other than 0 creates and writes nothing", () => {
  withTempDir((dir) => {
    const logger = new TensorBoardLogger(`${dir}/logs`, { rank: 1, now: () => 1700000000 });
    assert.equal(logger.path, null);
    assert.equal(logger.logDir, join(dir, "logs", "run_1_1700000000"));
    logger.logDict({ loss: 1 }, 1);
    logger.logConfig({ output_dir: dir });
    logger.close();
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("torchtune.training.metric_logging.TensorBoardLogger builds from a config section", () => {
  withTempDir((dir) => {
    const section = resolveComponent(
      "metric_logger",
      {
        _component_: "torchtune.training.metric_logging.TensorBoardLogger",
        log_dir: `${dir}/logs`,
      },
      "metric_logger",
      { recipe: "test", prefix: "" },
    );
    assert.equal(section._component_, "torchtune.training.metric_logging.TensorBoardLogger");
    assert.equal(section.organize_logs, true); // torchtune's default
    const logger = instantiate<MetricLogger>(section);
    assert.ok(logger instanceof TensorBoardLogger);
    assert.match(logger.logDir, /\/logs\/run_0_\d+(\.\d+)?$/);
    logger.logConfig({ output_dir: dir, batch_size: 2, optimizer: { lr: 3e-4 } });
    logger.logDict({ loss: 2 }, 1);
    logger.close();
    assert.equal(
      Deno.readTextFileSync(join(dir, "torchtune_config.yaml")),
      "output_dir: " + dir + "\nbatch_size: 2\noptimizer:\n  lr: 0.0003\n",
    );
    const events = readEventFile(Deno.readFileSync(logger.path!));
    assert.deepEqual(events.map((e) => e.values ?? e.fileVersion), [
      "brain.Event:2",
      [{ tag: "loss", simpleValue: 2 }],
    ]);

    // The older torchtune.utils path and organize_logs=False write straight into log_dir.
    const flat = instantiate<TensorBoardLogger>(resolveComponent(
      "metric_logger",
      {
        _component_: "torchtune.utils.metric_logging.TensorBoardLogger",
        log_dir: `${dir}/flat`,
        organize_logs: false,
      },
      "metric_logger",
      { recipe: "test", prefix: "" },
    ));
    assert.equal(flat.logDir, `${dir}/flat`);
    assert.ok(flat.path!.startsWith(`${dir}/flat/events.out.tfevents.`));
  });
});

Deno.test("TensorBoardLogger gives a one-line TuneError when log_dir is an existing file", () => {
  withTempDir((dir) => {
    const file = join(dir, "not_a_dir");
    Deno.writeTextFileSync(file, "x");
    for (const organizeLogs of [true, false]) {
      assertOneLineTuneError(
        () => new TensorBoardLogger(file, { organizeLogs, rank: 0 }),
        /^metric_logger\.log_dir=.*not_a_dir: cannot create the directory .*; set log_dir to a writable directory path$/,
      );
    }
  });
});
