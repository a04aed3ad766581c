/**
 * The GGUF v3 container (llama.cpp's model file): little endian throughout.
 *
 *   "GGUF" magic, u32 version (3), u64 tensor count, u64 metadata count
 *   metadata: key (u64 length + UTF-8), u32 value type, value
 *   tensor infos: name, u32 n_dims, u64 ne[n_dims] (ne[0] is the innermost, i.e. the columns
 *                 of a row-major (rows, cols) matrix), u32 ggml type, u64 offset into the data
 *   padding to `general.alignment` (32 when absent), then the tensor data, each tensor at an
 *   aligned offset.
 *
 * Value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array
 * (u32 element type, u64 count, elements), 10 u64, 11 i64, 12 f64.
 * Tensor payloads are written by the caller's encoder one tensor at a time (memory grows by
 * one tensor, not the file), through a temporary file renamed into place.
 */
import { TuneError } from "../errors.ts";
import { atomicWriteWith, readAt, writeAll } from "../checkpoint/atomic_write.ts";
import { openForReading } from "../checkpoint/fs.ts";

/** GGUF metadata value types. */
export const GgufType = {
  U8: 0,
  I8: 1,
  U16: 2,
  I16: 3,
  U32: 4,
  I32: 5,
  F32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  U64: 10,
  I64: 11,
  F64: 12,
} as const;

/** A typed metadata value (the type matters to llama.cpp: u32 ids, f32 epsilons, ...). */
export type GgufValue =
  | {
    type: "u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "f32" | "u64" | "i64" | "f64";
    value: number;
  }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "array"; of: "string"; value: string[] }
  | { type: "array"; of: "f32" | "i32" | "u32"; value: number[] };

/** ggml tensor types tune reads and writes (ggml.h's `enum ggml_type`). */
export const GgmlType = { F32: 0, F16: 1, Q8_0: 8, BF16: 30 } as const;
export type GgmlTypeName = keyof typeof GgmlType;

/** Bytes of `n` elements of a ggml type (Q8_0: blocks of 32 as 2-byte scale + 32 int8). */
export function ggmlBytes(type: GgmlTypeName, n: number): number {
  switch (type) {
    case "F32":
      return 4 * n;
    case "F16":
    case "BF16":
      return 2 * n;
    case "Q8_0":
      return (n / 32) * 34;
  }
}

/** One tensor as a writer gets it: shape in tune's row-major order, bytes made lazily. */
export interface GgufTensorOut {
  name: string;
  /** Row-major shape, outermost first, e.g. (out, in) for a linear weight. */
  shape: number[];
  type: GgmlTypeName;
  /** The tensor's bytes in `type` (called once, while writing). */
  encode: () => Uint8Array;
}

const ALIGN = 32;
const enc = new TextEncoder();

class ByteSink {
  #chunks: Uint8Array[] = [];
  #len = 0;
  bytes(b: Uint8Array) {
    this.#chunks.push(b);
    this.#len += b.length;
  }
  u32(v: number) {
    this.bytes(scalarBytes("u32", v));
  }
  u64(v: number) {
    this.bytes(scalarBytes("u64", v));
  }
  str(s: string) {
    const b = enc.encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  get length() {
    return this.#len;
  }
  concat(): Uint8Array {
    const out = new Uint8Array(this.#len);
    let o = 0;
    for (const c of this.#chunks) (out.set(c, o), (o += c.length));
    return out;
  }
}

const SCALAR: Record<string, [number, number, (d: DataView, v: number) => void]> = {
  u8: [GgufType.U8, 1, (d, v) => d.setUint8(0, v)],
  i8: [GgufType.I8, 1, (d, v) => d.setInt8(0, v)],
  u16: [GgufType.U16, 2, (d, v) => d.setUint16(0, v, true)],
  i16: [GgufType.I16, 2, (d, v) => d.setInt16(0, v, true)],
  u32: [GgufType.U32, 4, (d, v) => d.setUint32(0, v, true)],
  i32: [GgufType.I32, 4, (d, v) => d.setInt32(0, v, true)],
  f32: [GgufType.F32, 4, (d, v) => d.setFloat32(0, v, true)],
  u64: [GgufType.U64, 8, (d, v) => d.setBigUint64(0, BigInt(v), true)],
  i64: [GgufType.I64, 8, (d, v) => d.setBigInt64(0, BigInt(v), true)],
  f64: [GgufType.F64, 8, (d, v) => d.setFloat64(0, v, true)],
};

function scalarBytes(type: string, v: number): Uint8Array {
  const [, size, set] = SCALAR[type];
  const b = new Uint8Array(size);
  set(new DataView(b.buffer), v);
  return b;
}

function writeValue(s: ByteSink, v: GgufValue) {
  if (v.type === "bool") {
    s.u32(GgufType.BOOL);
    s.bytes(new Uint8Array([v.value ? 1 : 0]));
  } else if (v.type === "string") {
    s.u32(GgufType.STRING);
    s.str(v.value);
  } else if (v.type === "array") {
    s.u32(GgufType.ARRAY);
    if (v.of === "string") {
      s.u32(GgufType.STRING);
      s.u64(v.value.length);
      for (const x of v.value) s.str(x);
    } else {
      const [code, size, set] = SCALAR[v.of];
      s.u32(code);
      s.u64(v.value.length);
      const b = new Uint8Array(size * v.value.length);
      const d = new DataView(b.buffer);
      v.value.forEach((x, i) => set(new DataView(d.buffer, i * size, size), x));
      s.bytes(b);
    }
  } else {
    s.u32(SCALAR[v.type][0]);
    s.bytes(scalarBytes(v.type, v.value));
  }
}

const pad = (n: number) => (ALIGN - (n % ALIGN)) % ALIGN;

/** Write a GGUF v3 file: metadata in the given order, then the tensors in the given order. */
export function writeGguf(
  path: string,
  metadata: Map<string, GgufValue>,
  tensors: GgufTensorOut[],
): void {
  const head = new ByteSink();
  head.bytes(enc.encode("GGUF"));
  head.u32(3);
  head.u64(tensors.length);
  head.u64(metadata.size);
  for (const [k, v] of metadata) (head.str(k), writeValue(head, v));
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.type === "Q8_0" && t.shape[t.shape.length - 1] % 32 !== 0) {
      throw new Error(`${t.name}: Q8_0 needs rows of a multiple of 32 values`);
    }
    head.str(t.name);
    head.u32(t.shape.length);
    for (const d of [...t.shape].reverse()) head.u64(d);
    head.u32(GgmlType[t.type]);
    head.u64(offset);
    const size = ggmlBytes(t.type, n);
    sizes.push(size);
    offset += size + pad(size);
  }
  const headBytes = head.concat();
  atomicWriteWith(path, (file) => {
    writeAll(file, headBytes);
    writeAll(file, new Uint8Array(pad(headBytes.length)));
    tensors.forEach((t, i) => {
      const b = t.encode();
      if (b.length !== sizes[i]) {
        throw new Error(`${t.name}: encoder gave ${b.length} bytes, expected ${sizes[i]}`);
      }
      writeAll(file, b);
      writeAll(file, new Uint8Array(pad(b.length)));
    });
  });
}

/** One tensor of a read GGUF file. */
export interface GgufTensorInfo {
  name: string;
  /** Row-major shape, outermost first (the file's ne reversed). */
  shape: number[];
  type: GgmlTypeName;
  /** Absolute byte offset of the data in the file. */
  begin: number;
  bytes: number;
}

/** A parsed GGUF header; tensor data is read on demand with `readGgufTensorBytes`. */
export interface GgufHeader {
  path: string;
  version: number;
  /** Metadata values, untyped (numbers, bigints for 64-bit integers past 2^53, strings, arrays). */
  metadata: Map<string, unknown>;
  tensors: GgufTensorInfo[];
}

const TYPE_NAMES = new Map<number, GgmlTypeName>(
  Object.entries(GgmlType).map(([k, v]) => [v, k as GgmlTypeName]),
);

class ByteReader {
  #o = 0;
  readonly #d: DataView;
  constructor(readonly b: Uint8Array, readonly path: string) {
    this.#d = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  get offset() {
    return this.#o;
  }
  #need(n: number) {
    if (this.#o + n > this.b.length) {
      throw new TuneError(`${this.path}: GGUF header is truncated; export or download it again`);
    }
    const o = this.#o;
    this.#o += n;
    return o;
  }
  u8() {
    return this.#d.getUint8(this.#need(1));
  }
  u32() {
    return this.#d.getUint32(this.#need(4), true);
  }
  u64() {
    const v = this.#d.getBigUint64(this.#need(8), true);
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  u64n(): number {
    const v = this.u64();
    if (typeof v !== "number") throw new TuneError(`${this.path}: GGUF size field out of range`);
    return v;
  }
  str() {
    const n = this.u64n();
    const o = this.#need(n);
    return new TextDecoder().decode(this.b.subarray(o, o + n));
  }
  value(type: number): unknown {
    const d = this.#d;
    switch (type) {
      case GgufType.U8:
        return d.getUint8(this.#need(1));
      case GgufType.I8:
        return d.getInt8(this.#need(1));
      case GgufType.U16:
        return d.getUint16(this.#need(2), true);
      case GgufType.I16:
        return d.getInt16(this.#need(2), true);
      case GgufType.U32:
        return d.getUint32(this.#need(4), true);
      case GgufType.I32:
        return d.getInt32(this.#need(4), true);
      case GgufType.F32:
        return d.getFloat32(this.#need(4), true);
      case GgufType.BOOL:
        return d.getUint8(this.#need(1)) !== 0;
      case GgufType.STRING:
        return this.str();
      case GgufType.U64:
        return this.u64();
      case GgufType.I64: {
        const v = d.getBigInt64(this.#need(8), true);
        return Number.isSafeInteger(Number(v)) ? Number(v) : v;
      }
      case GgufType.F64:
        return d.getFloat64(this.#need(8), true);
      case GgufType.ARRAY: {
        const t = this.u32();
        const n = this.u64n();
        const out: unknown[] = new Array(n);
        for (let i = 0; i < n; i++) out[i] = this.value(t);
        return out;
      }
      default:
        throw new TuneError(`${this.path}: unknown GGUF value type ${type}; the file is corrupt`);
    }
  }
}

/** Read and check the header of a GGUF file (v2 or v3). */
export function readGgufHeader(path: string): GgufHeader {
  const file = openForReading(path, "GGUF");
  try {
    const size = file.statSync().size;
    // Headers (vocabularies included) are rarely past a few MB; grow the window when needed.
    let window = Math.min(size, 1 << 24);
    for (;;) {
      const bytes = readAt(file, 0, window);
      try {
        return parseHeader(bytes, path, size);
      } catch (e) {
        if (e instanceof TuneError && /truncated/.test(e.message) && window < size) {
          window = Math.min(size, window * 4);
          continue;
        }
        throw e;
      }
    }
  } finally {
    file.close();
  }
}

function parseHeader(bytes: Uint8Array, path: string, fileSize: number): GgufHeader {
  const r = new ByteReader(bytes, path);
  if (new TextDecoder().decode(bytes.subarray(0, 4)) !== "GGUF") {
    throw new TuneError(`${path} is not a GGUF file (no GGUF magic)`);
  }
  r.u32();
  const version = r.u32();
  if (version !== 2 && version !== 3) {
    throw new TuneError(`${path}: GGUF version ${version} is not supported (tune reads 2 and 3)`);
  }
  const nTensors = r.u64n();
  const nKv = r.u64n();
  const metadata = new Map<string, unknown>();
  for (let i = 0; i < nKv; i++) {
    const k = r.str();
    metadata.set(k, r.value(r.u32()));
  }
  const align = Number(metadata.get("general.alignment") ?? ALIGN);
  const raw: { name: string; shape: number[]; type: GgmlTypeName; offset: number }[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = r.str();
    const nd = r.u32();
    const ne: number[] = [];
    for (let j = 0; j < nd; j++) ne.push(r.u64n());
    const code = r.u32();
    const type = TYPE_NAMES.get(code);
    if (!type) {
      throw new TuneError(
        `${path}: tensor ${name} has ggml type ${code}; tune reads F32, F16, BF16 and Q8_0 ` +
          `(re-quantize the file to one of them with llama.cpp's llama-quantize)`,
      );
    }
    raw.push({ name, shape: ne.reverse(), type, offset: r.u64n() });
  }
  const dataStart = r.offset + ((align - (r.offset % align)) % align);
  const tensors = raw.map((t) => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const bytes = ggmlBytes(t.type, n);
    const begin = dataStart + t.offset;
    if (begin + bytes > fileSize) {
      throw new TuneError(
        `${path}: tensor ${t.name} runs past the end of the file; the file is truncated`,
      );
    }
    return { name: t.name, shape: t.shape, type: t.type, begin, bytes };
  });
  return { path, version, metadata, tensors };
}

/** The raw bytes of one tensor of a GGUF file. */
export function readGgufTensorBytes(file: Deno.FsFile, t: GgufTensorInfo): Uint8Array {
  return readAt(file, t.begin, t.bytes);
}
