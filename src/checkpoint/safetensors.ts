/**
 * The Hugging Face safetensors format: an 8-byte little-endian header length N, N bytes of
 * JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then
 * the raw little-endian tensor bytes. Tensors are read one at a time with a file handle
 * (no whole-file read), and written through a temporary file.
 */
import { TuneError } from "../errors.ts";
import { type HostTensor, lazyTensor, numel, reusableF32 } from "../params/state_dict.ts";
import { atomicWriteWith, readAt, writeAll } from "./atomic_write.ts";
import { openForReading } from "./fs.ts";
import { decodeToF32, dtypeBytes, encodeFromF32, f32BitsToBf16, type FileDtype } from "./dtype.ts";

/** One tensor's place in a safetensors file. */
export interface SafetensorsEntry {
  name: string;
  dtype: FileDtype;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

/** The parsed, validated header of a safetensors file. */
export interface SafetensorsHeader {
  path: string;
  entries: SafetensorsEntry[];
  metadata: Record<string, string> | null;
}

const DTYPES: Record<string, FileDtype> = { F32: "f32", BF16: "bf16", F16: "f16" };
const DTYPE_NAMES: Record<FileDtype, string> = { f32: "F32", bf16: "BF16", f16: "F16" };

/** Read and check the header of `path`: every tensor's dtype, shape and byte range. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  const file = openForReading(path, "safetensors");
  try {
    const size = file.statSync().size;
    const lenBytes = readAt(file, 0, 8);
    if (lenBytes.length < 8) {
      throw new TuneError(`${path} is not a safetensors file: ${size} bytes, no header length`);
    }
    const headerLen = Number(new DataView(lenBytes.buffer).getBigUint64(0, true));
    if (8 + headerLen > size) {
      throw new TuneError(
        `${path}: safetensors header length ${headerLen} runs past the end of the file ` +
          `(${size} bytes); the file is truncated or not safetensors, download it again`,
      );
    }
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(new TextDecoder().decode(readAt(file, 8, headerLen)));
    } catch {
      throw new TuneError(`${path}: safetensors header is not valid JSON; download it again`);
    }
    const dataStart = 8 + headerLen;
    const entries: SafetensorsEntry[] = [];
    for (const [name, raw] of Object.entries(header)) {
      if (name === "__metadata__") continue;
      const e = raw as { dtype?: string; shape?: number[]; data_offsets?: [number, number] };
      const dtype = DTYPES[e.dtype ?? ""];
      if (!dtype) {
        throw new TuneError(
          `${path}: tensor ${name} has dtype ${e.dtype}, tune reads F32, BF16 and F16; ` +
            `convert the checkpoint to one of them`,
        );
      }
      const shape = e.shape ?? [];
      const [a, b] = e.data_offsets ?? [0, -1];
      if (b - a !== numel(shape) * dtypeBytes(dtype)) {
        throw new TuneError(
          `${path}: tensor ${name} has ${b - a} bytes for shape [${shape}] ${e.dtype}; ` +
            `the file is corrupt, download it again`,
        );
      }
      if (dataStart + b > size) {
        throw new TuneError(
          `${path}: tensor ${name} ends at byte ${dataStart + b} but the file has ${size} ` +
            `bytes; the file is truncated, download it again`,
        );
      }
      entries.push({ name, dtype, shape, begin: dataStart + a, end: dataStart + b });
    }
    const metadata = (header.__metadata__ ?? null) as Record<string, string> | null;
    return { path, entries, metadata };
  } finally {
    file.close();
  }
}

/**
 * Read tensors of `path` as fp32 (bf16/f16 widened exactly), one tensor at a time.
 * `filter` picks names to read (default all); `sourceDtype` records the file's dtype.
 */
export function readSafetensors(
  path: string,
  options: { filter?: (name: string) => boolean } = {},
): Map<string, HostTensor> {
  const header = readSafetensorsHeader(path);
  const out = new Map<string, HostTensor>();
  const file = Deno.openSync(path, { read: true });
  try {
    for (const e of header.entries) {
      if (options.filter && !options.filter(e.name)) continue;
      const data = new Float32Array(numel(e.shape));
      readTensorInto(file, e, data, path);
      out.set(e.name, { shape: e.shape, data, sourceDtype: e.dtype });
    }
  } finally {
    file.close();
  }
  return out;
}

/**
 * The tensors of `path` as lazy tensors (see params/state_dict.ts): only the header is read
 * now; each tensor is read when used, straight into the array it is filled into (a model's
 * parameter buffer), with one read of its byte range (bf16/f16 widened in chunks).
 */
export function lazySafetensors(path: string): Map<string, HostTensor> {
  const header = readSafetensorsHeader(path);
  const out = new Map<string, HostTensor>();
  for (const e of header.entries) {
    const fill = (dst: Float32Array) => {
      const file = Deno.openSync(path, { read: true });
      try {
        readTensorInto(file, e, dst, path);
      } finally {
        file.close();
      }
    };
    out.set(e.name, lazyTensor(e.shape, fill, e.dtype));
  }
  return out;
}

/** Bytes of the reusable chunk buffer of 16-bit conversions (reads and writes). */
const CHUNK_BYTES = 1 << 22;
let chunk: Uint8Array | null = null;
function chunkBuffer(): Uint8Array {
  chunk ??= new Uint8Array(CHUNK_BYTES);
  return chunk;
}

/** Read exactly dst.length bytes at `position` into dst (false when the file ends first). */
function readFully(file: Deno.FsFile, position: number, dst: Uint8Array): boolean {
  file.seekSync(position, Deno.SeekMode.Start);
  let off = 0;
  while (off < dst.length) {
    const n = file.readSync(dst.subarray(off));
    if (n === null || n === 0) return false;
    off += n;
  }
  return true;
}

/**
 * Read tensor `e` of an open safetensors file into `dst` (its numel elements, fp32): f32
 * bytes go straight into dst's memory (one read, no copy); bf16/f16 pass through a reused
 * 4 MB buffer and are widened exactly chunk by chunk.
 */
export function readTensorInto(
  file: Deno.FsFile,
  e: SafetensorsEntry,
  dst: Float32Array,
  path = "safetensors file",
): void {
  const n = numel(e.shape);
  if (dst.length !== n) throw new Error(`tensor ${e.name}: ${dst.length} slots for ${n} values`);
  const truncated = () =>
    new TuneError(`${path}: tensor ${e.name} is truncated; download it again`);
  if (e.dtype === "f32") {
    if (!readFully(file, e.begin, new Uint8Array(dst.buffer, dst.byteOffset, n * 4))) {
      throw truncated();
    }
    return;
  }
  const buf = chunkBuffer();
  const per = CHUNK_BYTES >> 1; // elements per chunk
  const halves = new Uint16Array(buf.buffer, 0, per);
  const bits = new Uint32Array(dst.buffer, dst.byteOffset, n);
  for (let i0 = 0; i0 < n; i0 += per) {
    const m = Math.min(per, n - i0);
    if (!readFully(file, e.begin + 2 * i0, buf.subarray(0, 2 * m))) throw truncated();
    if (e.dtype === "bf16") {
      for (let i = 0; i < m; i++) bits[i0 + i] = halves[i] << 16;
    } else {
      dst.set(decodeToF32(buf.subarray(0, 2 * m), e.dtype), i0);
    }
  }
}

/** How a writer picks each tensor's file dtype: fixed, or the tensor's `sourceDtype` (f32 if unset). */
export type WriteDtype = FileDtype | "source";

/**
 * Write tensors (in the given order) to `path` as safetensors, through a temporary file.
 * Tensors are streamed one at a time (a lazy tensor's values made just for its write), so
 * memory grows by at most one tensor, not the file.
 */
export function writeSafetensors(
  path: string,
  tensors: Iterable<[string, HostTensor]>,
  options: { dtype?: WriteDtype; metadata?: Record<string, string> } = {},
): void {
  const list = [...tensors];
  const header: Record<string, unknown> = {};
  if (options.metadata) header.__metadata__ = options.metadata;
  let offset = 0;
  const dtypes: FileDtype[] = [];
  for (const [name, t] of list) {
    const d = pickDtype(t, options.dtype ?? "source");
    dtypes.push(d);
    const len = numel(t.shape) * dtypeBytes(d);
    if (!t.lazy && t.data.length !== numel(t.shape)) {
      throw new Error(`tensor ${name}: ${t.data.length} values for shape [${t.shape}]`);
    }
    header[name] = { dtype: DTYPE_NAMES[d], shape: t.shape, data_offsets: [offset, offset + len] };
    offset += len;
  }
  let head = new TextEncoder().encode(JSON.stringify(header));
  // Pad the header with spaces so tensor data starts 8-byte aligned (as the reference writer does).
  const pad = (8 - (head.length % 8)) % 8;
  if (pad) head = new TextEncoder().encode(JSON.stringify(header) + " ".repeat(pad));
  atomicWriteWith(path, (file) => {
    const len = new Uint8Array(8);
    new DataView(len.buffer).setBigUint64(0, BigInt(head.length), true);
    writeAll(file, len);
    writeAll(file, head);
    list.forEach(([, t], i) => {
      // a lazy tensor fills a buffer reused by every tensor and save (no fresh memory)
      if (t.lazy) {
        const data = reusableF32("write", numel(t.shape));
        t.lazy.fill(data);
        writeTensor(file, data, dtypes[i]);
      } else writeTensor(file, t.data, dtypes[i]);
    });
  });
}

/**
 * Write fp32 `data` as `dtype`: f32 straight from its memory, bf16/f16 encoded a 4 MB
 * chunk at a time into a reused buffer (rounding to nearest even, NaN kept quiet).
 */
function writeTensor(file: Deno.FsFile, data: Float32Array, dtype: FileDtype): void {
  if (dtype !== "bf16") {
    writeAll(file, encodeFromF32(data, dtype));
    return;
  }
  const buf = chunkBuffer();
  const per = CHUNK_BYTES >> 1;
  const halves = new Uint16Array(buf.buffer, 0, per);
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  for (let i0 = 0; i0 < data.length; i0 += per) {
    const m = Math.min(per, data.length - i0);
    for (let i = 0; i < m; i++) halves[i] = f32BitsToBf16(bits[i0 + i]);
    writeAll(file, buf.subarray(0, 2 * m));
  }
}

function pickDtype(t: HostTensor, want: WriteDtype): FileDtype {
  return want === "source" ? (t.sourceDtype ?? "f32") : want;
}

/** Bytes a tensor takes in a file written with `dtype`. */
export function tensorFileBytes(t: HostTensor, dtype: WriteDtype): number {
  return numel(t.shape) * dtypeBytes(pickDtype(t, dtype));
}
