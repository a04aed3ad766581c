/**
 * torchtune's `TensorBoardLogger`: scalars in TensorBoard's event-file format, written
 * directly (no TensorFlow, no Python), so `tensorboard --logdir <log_dir>` shows them.
 *
 * An event file is a sequence of TFRecords (u64le data length, masked CRC32C of those 8
 * bytes, the data, masked CRC32C of the data), each holding one protobuf `Event`
 * (tensorflow/core/util/event.proto). The first Event carries `file_version:
 * "brain.Event:2"`; after it, one Event per scalar with `wall_time`, `step` and a
 * `Summary` of one `{tag, simple_value}`, the layout torch.utils.tensorboard's
 * SummaryWriter.add_scalar writes (torchtune passes new_style=True, a tensor summary;
 * TensorBoard reads `simple_value` into the same scalars plugin). The file name is
 * SummaryWriter's: `events.out.tfevents.<unix seconds, 10 digits>.<host>.<pid>.<n>`.
 */
import { join } from "node:path";
import { atomicWrite } from "../checkpoint/atomic_write.ts";
import { stringifyConfig } from "../config/yaml.ts";
import { discoverRank } from "../distributed/env.ts";
import { TuneError } from "../errors.ts";
import type { MetricLogger, MetricValue } from "./metric_logging.ts";

// ---------------------------------------------------------------------------------------
// CRC32C and TFRecord framing

/** CRC-32C (Castagnoli) byte table, reflected polynomial 0x82F63B78. */
const CRC32C_TABLE: Uint32Array = (() => {
  const t = new Uint32Array(256); // (256,)
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** CRC-32C of `data` (check value: "123456789" gives 0xE3069283). */
export function crc32c(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = CRC32C_TABLE[(crc ^ data[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15, add 0xa282ead8 (mod 2^32). */
export function maskedCrc32c(data: Uint8Array): number {
  const crc = crc32c(data);
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** Frame one record: u64le length, masked CRC of the length, data, masked CRC of data. */
export function tfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(16 + data.length); // (8 + 4 + N + 4,)
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

// ---------------------------------------------------------------------------------------
// The few protobuf messages an event file needs

/** One decoded (or to-be-encoded) Event: the version record or one scalar. */
export interface TfEvent {
  wallTime: number;
  step: number;
  /** Set on the first record of a file ("brain.Event:2"). */
  fileVersion?: string;
  /** Summary values (one per scalar Event as written here). */
  values?: Array<{ tag: string; simpleValue: number }>;
}

/** Appends protobuf wire-format fields, in the order they are called. */
class ProtoWriter {
  #parts: number[] = [];
  #scratch = new DataView(new ArrayBuffer(8));

  varint(v: bigint): void {
    let x = BigInt.asUintN(64, v); // negative int64: ten bytes of two's complement
    while (x >= 0x80n) {
      this.#parts.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.#parts.push(Number(x));
  }

  key(field: number, wireType: number): void {
    this.varint(BigInt((field << 3) | wireType));
  }

  double(field: number, v: number): void {
    this.key(field, 1);
    this.#scratch.setFloat64(0, v, true);
    for (let i = 0; i < 8; i++) this.#parts.push(this.#scratch.getUint8(i));
  }

  float(field: number, v: number): void {
    this.key(field, 5);
    this.#scratch.setFloat32(0, v, true);
    for (let i = 0; i < 4; i++) this.#parts.push(this.#scratch.getUint8(i));
  }

  bytes(field: number, b: Uint8Array): void {
    this.key(field, 2);
    this.varint(BigInt(b.length));
    for (const x of b) this.#parts.push(x);
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.#parts);
  }
}

const utf8 = new TextEncoder();

/**
 * Serialize an Event {double wall_time=1; int64 step=2; oneof what {string file_version=3;
 * Summary summary=5}}, Summary {repeated Value value=1}, Value {string tag=1; oneof value
 * {float simple_value=2}}. Fields go in number order, as protobuf's serializers write them;
 * wall_time and step are skipped when zero (proto3), the oneof members never.
 */
export function encodeEvent(ev: TfEvent): Uint8Array {
  const w = new ProtoWriter();
  // -0 is not the proto3 default (protobuf compares bits), so only +0 is skipped.
  if (!Object.is(ev.wallTime, 0)) w.double(1, ev.wallTime);
  if (ev.step !== 0) {
    w.key(2, 0);
    w.varint(BigInt(Math.trunc(ev.step)));
  }
  if (ev.fileVersion !== undefined) w.bytes(3, utf8.encode(ev.fileVersion));
  if (ev.values !== undefined) {
    const summary = new ProtoWriter();
    for (const v of ev.values) {
      const value = new ProtoWriter();
      if (v.tag !== "") value.bytes(1, utf8.encode(v.tag));
      value.float(2, v.simpleValue);
      summary.bytes(1, value.finish());
    }
    w.bytes(5, summary.finish());
  }
  return w.finish();
}

/** Reads protobuf wire-format fields from one message's bytes. */
class ProtoReader {
  pos = 0;
  readonly #view: DataView;

  constructor(readonly buf: Uint8Array) {
    this.#view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  varint(): bigint {
    let v = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.pos >= this.buf.length) throw new TuneError("truncated protobuf varint");
      const b = this.buf[this.pos++];
      v |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return BigInt.asUintN(64, v);
    }
    throw new TuneError("protobuf varint longer than 10 bytes");
  }

  double(): number {
    this.#need(8);
    const v = this.#view.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }

  float(): number {
    this.#need(4);
    const v = this.#view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  bytes(): Uint8Array {
    const n = Number(this.varint());
    this.#need(n);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  /** Skip a field of another number (wire types 0, 1, 2 and 5). */
  skip(wireType: number): void {
    if (wireType === 0) this.varint();
    else if (wireType === 2) this.bytes();
    else if (wireType === 1 || wireType === 5) {
      const n = wireType === 1 ? 8 : 4;
      this.#need(n);
      this.pos += n;
    } else throw new TuneError(`unsupported protobuf wire type ${wireType}`);
  }

  #need(n: number): void {
    if (this.pos + n > this.buf.length) throw new TuneError("truncated protobuf field");
  }
}

const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/** Parse one serialized Event (fields other than wall_time, step, file_version, summary are skipped). */
export function decodeEvent(data: Uint8Array): TfEvent {
  const r = new ProtoReader(data);
  const ev: TfEvent = { wallTime: 0, step: 0 };
  while (!r.done) {
    const key = Number(r.varint());
    const field = key >>> 3, wire = key & 7;
    if (field === 1 && wire === 1) ev.wallTime = r.double();
    else if (field === 2 && wire === 0) ev.step = Number(BigInt.asIntN(64, r.varint()));
    else if (field === 3 && wire === 2) ev.fileVersion = utf8Decoder.decode(r.bytes());
    else if (field === 5 && wire === 2) {
      ev.values ??= [];
      const s = new ProtoReader(r.bytes());
      while (!s.done) {
        const k = Number(s.varint());
        if (k !== ((1 << 3) | 2)) {
          s.skip(k & 7);
          continue;
        }
        const v = new ProtoReader(s.bytes());
        let tag = "", simpleValue = 0;
        while (!v.done) {
          const kv = Number(v.varint());
          if (kv === ((1 << 3) | 2)) tag = utf8Decoder.decode(v.bytes());
          else if (kv === ((2 << 3) | 5)) simpleValue = v.float();
          else v.skip(kv & 7);
        }
        ev.values.push({ tag, simpleValue });
      }
    } else r.skip(wire);
  }
  return ev;
}

/**
 * Read every record of an event file, checking both CRCs of each, and decode its Events.
 * Strict: a truncated last record is an error (TensorBoard itself waits for the rest).
 * @throws TuneError naming the record on a bad CRC or a truncated record.
 */
export function readEventFile(bytes: Uint8Array): TfEvent[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const events: TfEvent[] = [];
  let off = 0;
  while (off < bytes.length) {
    const n = events.length;
    if (off + 12 > bytes.length) throw new TuneError(`event record ${n}: truncated header`);
    const len = Number(view.getBigUint64(off, true));
    if (view.getUint32(off + 8, true) !== maskedCrc32c(bytes.subarray(off, off + 8))) {
      throw new TuneError(`event record ${n}: length CRC mismatch`);
    }
    if (off + 16 + len > bytes.length) throw new TuneError(`event record ${n}: truncated data`);
    const data = bytes.subarray(off + 12, off + 12 + len);
    if (view.getUint32(off + 12 + len, true) !== maskedCrc32c(data)) {
      throw new TuneError(`event record ${n}: data CRC mismatch`);
    }
    events.push(decodeEvent(data));
    off += 16 + len;
  }
  return events;
}

// ---------------------------------------------------------------------------------------
// The logger

/** Options of `TensorBoardLogger`. */
export interface TensorBoardLoggerOptions {
  /** Write under `<log_dir>/run_<rank>_<unix time>` (torchtune's default, true). */
  organizeLogs?: boolean;
  /** Wall clock in seconds since the epoch (tests inject fixed times). */
  now?: () => number;
  /** This process's global rank (default: from the launcher's environment); only rank 0 writes. */
  rank?: number;
}

/** SummaryWriter's per-process writer counter, the last part of the file name. */
let writerUid = 0;

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "localhost"; // no --allow-sys
  }
}

function reason(e: unknown): string {
  return String(e instanceof Error ? e.message : e).split("\n")[0];
}

/**
 * Writes each logged scalar as a TensorBoard Event into
 * `<log_dir>[/run_<rank>_<time>]/events.out.tfevents.<secs>.<host>.<pid>.<n>`. Every
 * `logDict` appends its records with one write, so a crash loses nothing already logged
 * (an event file is append-only by design; TensorBoard reads it while it grows). Ranks
 * other than 0 write nothing, as in torchtune.
 */
export class TensorBoardLogger implements MetricLogger {
  /** The run's directory (log_dir, or its run_<rank>_<time> subdirectory). */
  readonly logDir: string;
  /** The event file; null on ranks other than 0. */
  readonly path: string | null = null;
  readonly #now: () => number;
  #closed = false;

  constructor(logDir: string, options: TensorBoardLoggerOptions = {}) {
    this.#now = options.now ?? (() => Date.now() / 1000);
    const rank = options.rank ?? discoverRank().rank;
    const t = this.#now();
    this.logDir = options.organizeLogs ?? true ? join(logDir, `run_${rank}_${t}`) : logDir;
    if (rank !== 0) return;
    try {
      Deno.mkdirSync(this.logDir, { recursive: true });
      if (!Deno.statSync(this.logDir).isDirectory) throw new Error("not a directory");
    } catch (e) {
      throw new TuneError(
        `metric_logger.log_dir=${logDir}: cannot create the directory ${this.logDir} ` +
          `(${reason(e)}); set log_dir to a writable directory path`,
      );
    }
    const secs = String(Math.trunc(t)).padStart(10, "0");
    this.path = join(
      this.logDir,
      `events.out.tfevents.${secs}.${hostname()}.${Deno.pid}.${writerUid++}`,
    );
    this.#append(tfRecord(encodeEvent({ wallTime: t, step: 0, fileVersion: "brain.Event:2" })));
  }

  log(name: string, value: MetricValue, step: number): void {
    this.logDict({ [name]: value }, step);
  }

  /** One Event per scalar, all with this call's wall time, appended in one write. */
  logDict(metrics: Record<string, MetricValue>, step: number): void {
    if (this.path === null || this.#closed) return;
    const wallTime = this.#now();
    const records = Object.entries(metrics).map(([tag, simpleValue]) =>
      tfRecord(encodeEvent({ wallTime, step: Math.trunc(step), values: [{ tag, simpleValue }] }))
    );
    const out = new Uint8Array(records.reduce((n, r) => n + r.length, 0));
    let off = 0;
    for (const r of records) {
      out.set(r, off);
      off += r.length;
    }
    this.#append(out);
  }

  /**
   * As torchtune's `save_config`: the resolved config as YAML in
   * `<output_dir>/torchtune_config.yaml` (the run directory when the config has no
   * output_dir); rank 0 only.
   */
  logConfig(config: Record<string, unknown>): void {
    if (this.path === null) return;
    const dir = typeof config.output_dir === "string" ? config.output_dir : this.logDir;
    const target = join(dir, "torchtune_config.yaml");
    try {
      atomicWrite(target, stringifyConfig(config));
    } catch (e) {
      throw new TuneError(`cannot write ${target} (${reason(e)}); check output_dir`);
    }
  }

  /** Later calls log nothing (as torchtune's closed writer). */
  close(): void {
    this.#closed = true;
  }

  #append(bytes: Uint8Array): void {
    try {
      Deno.writeFileSync(this.path!, bytes, { append: true });
    } catch (e) {
      throw new TuneError(
        `cannot append to the TensorBoard event file ${this.path} (${reason(e)}); ` +
          `check that metric_logger.log_dir is writable`,
      );
    }
  }
}
