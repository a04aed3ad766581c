/**
 * A small zip reader and writer, enough for PyTorch's `torch.save` archives (which are zips
 * of a pickle plus one raw entry per storage). The reader lists the central directory and
 * reads entries one at a time through a file handle (stored, or deflate via node:zlib),
 * with zip64 support. The writer stores entries uncompressed, 64-byte aligned as torch
 * does, writes zip64 records when sizes or offsets need them, and streams to a file.
 */
import { crc32, inflateRawSync } from "node:zlib";
import { TuneError } from "../errors.ts";
import { readAt, writeAll } from "./atomic_write.ts";

/** One file inside a zip archive. */
export interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

const U32 = 0xffffffff;

/** Read the central directory of the zip at `path`. */
export function listZip(file: Deno.FsFile, path: string): ZipEntry[] {
  const size = file.statSync().size;
  const tailLen = Math.min(size, 65536 + 22);
  const tail = readAt(file, size - tailLen, tailLen);
  const tv = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new TuneError(`${path} is not a zip archive (no end-of-directory record)`);
  let count = tv.getUint16(eocd + 10, true);
  let cdSize = tv.getUint32(eocd + 12, true);
  let cdOffset = tv.getUint32(eocd + 16, true);
  // zip64: a locator sits just before the classic end record.
  if (eocd >= 20 && tv.getUint32(eocd - 20, true) === 0x07064b50) {
    const recOff = Number(tv.getBigUint64(eocd - 20 + 8, true));
    const rec = readAt(file, recOff, 56);
    const rv = new DataView(rec.buffer);
    if (rv.getUint32(0, true) !== 0x06064b50) throw new TuneError(`${path}: bad zip64 record`);
    count = Number(rv.getBigUint64(32, true));
    cdSize = Number(rv.getBigUint64(40, true));
    cdOffset = Number(rv.getBigUint64(48, true));
  }
  if (cdOffset + cdSize > size) {
    throw new TuneError(`${path}: zip directory runs past the end of the file (truncated?)`);
  }
  const cd = readAt(file, cdOffset, cdSize);
  const v = new DataView(cd.buffer);
  const entries: ZipEntry[] = [];
  let p = 0;
  for (let k = 0; k < count; k++) {
    if (v.getUint32(p, true) !== 0x02014b50) throw new TuneError(`${path}: corrupt zip directory`);
    const method = v.getUint16(p + 10, true);
    let compressedSize = v.getUint32(p + 20, true);
    let sizeU = v.getUint32(p + 24, true);
    const nameLen = v.getUint16(p + 28, true);
    const extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    let localHeaderOffset = v.getUint32(p + 42, true);
    const name = new TextDecoder().decode(cd.subarray(p + 46, p + 46 + nameLen));
    // zip64 extended information: present fields in order size, compressed, offset.
    let e = p + 46 + nameLen;
    const extraEnd = e + extraLen;
    while (e + 4 <= extraEnd) {
      const id = v.getUint16(e, true);
      const len = v.getUint16(e + 2, true);
      if (id === 0x0001) {
        let q = e + 4;
        if (sizeU === U32) (sizeU = Number(v.getBigUint64(q, true))), (q += 8);
        if (compressedSize === U32) (compressedSize = Number(v.getBigUint64(q, true))), (q += 8);
        if (localHeaderOffset === U32) localHeaderOffset = Number(v.getBigUint64(q, true));
      }
      e += 4 + len;
    }
    entries.push({ name, method, compressedSize, size: sizeU, localHeaderOffset });
    p = extraEnd + commentLen;
  }
  return entries;
}

/** Absolute offset of an entry's data (after its local header). */
export function entryDataOffset(file: Deno.FsFile, entry: ZipEntry, path: string): number {
  const h = readAt(file, entry.localHeaderOffset, 30);
  const v = new DataView(h.buffer);
  if (h.length < 30 || v.getUint32(0, true) !== 0x04034b50) {
    throw new TuneError(`${path}: corrupt zip entry ${entry.name}`);
  }
  return entry.localHeaderOffset + 30 + v.getUint16(26, true) + v.getUint16(28, true);
}

/**
 * Read bytes [start, start+length) of an entry's uncompressed content. Stored entries are
 * read in place; deflated ones are inflated whole (torch never deflates storages).
 */
export function readZipEntry(
  file: Deno.FsFile,
  entry: ZipEntry,
  path: string,
  start = 0,
  length = entry.size - start,
): Uint8Array {
  if (start + length > entry.size) {
    throw new TuneError(
      `${path}: entry ${entry.name} has ${entry.size} bytes, needed ${start + length}`,
    );
  }
  const at = entryDataOffset(file, entry, path);
  if (entry.method === 0) {
    const out = readAt(file, at + start, length);
    if (out.length !== length) {
      throw new TuneError(`${path}: entry ${entry.name} is truncated; the file is incomplete`);
    }
    return out;
  }
  if (entry.method === 8) {
    const raw = readAt(file, at, entry.compressedSize);
    const full = new Uint8Array(inflateRawSync(raw));
    return full.subarray(start, start + length);
  }
  throw new TuneError(
    `${path}: entry ${entry.name} uses zip method ${entry.method}, not supported`,
  );
}

/** Streams stored (uncompressed) entries into an open file; call `finish()` once at the end. */
/**
 * The fields a local file header and its central-directory entry share, from `at` (the
 * "version needed" field): version needed (4.5 with ZIP64 sizes, else 2.0), CRC-32, the stored
 * and uncompressed sizes (0xffffffff when ZIP64 holds them), name and extra-field lengths.
 */
function setSharedFields(
  v: DataView,
  at: number,
  zip64: boolean,
  crc: number,
  size: number,
  nameLength: number,
  extraLength: number,
): void {
  v.setUint16(at, zip64 ? 45 : 20, true);
  v.setUint32(at + 10, crc, true);
  v.setUint32(at + 14, zip64 ? U32 : size, true);
  v.setUint32(at + 18, zip64 ? U32 : size, true);
  v.setUint16(at + 22, nameLength, true);
  v.setUint16(at + 24, extraLength, true);
}

export class ZipWriter {
  #file: Deno.FsFile;
  #offset = 0;
  #central: Uint8Array[] = [];
  #count = 0;

  constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  /** Add one entry, its data padded to start at a multiple of 64 bytes (as torch.save does). */
  add(name: string, data: Uint8Array): void {
    const nameBytes = new TextEncoder().encode(name);
    const big = data.length >= U32 || this.#offset >= U32;
    const zip64Len = big ? 20 : 0; // local zip64 extra: id, len, size, compressed size
    const base = this.#offset + 30 + nameBytes.length + zip64Len + 4;
    const pad = (64 - (base % 64)) % 64;
    const extra = new Uint8Array(zip64Len + 4 + pad);
    const ev = new DataView(extra.buffer);
    if (big) {
      ev.setUint16(0, 0x0001, true);
      ev.setUint16(2, 16, true);
      ev.setBigUint64(4, BigInt(data.length), true);
      ev.setBigUint64(12, BigInt(data.length), true);
    }
    ev.setUint16(zip64Len, 0x4246, true); // "FB", torch's padding record
    ev.setUint16(zip64Len + 2, pad, true);
    const crc = crc32(data) >>> 0;
    const local = new Uint8Array(30);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    setSharedFields(lv, 4, big, crc, data.length, nameBytes.length, extra.length);
    const headerOffset = this.#offset;
    writeAll(this.#file, local);
    writeAll(this.#file, nameBytes);
    writeAll(this.#file, extra);
    writeAll(this.#file, data);
    this.#offset += 30 + nameBytes.length + extra.length + data.length;

    const cbig = big || headerOffset >= U32;
    const cextra = new Uint8Array(cbig ? 28 : 0);
    if (cbig) {
      const cv = new DataView(cextra.buffer);
      cv.setUint16(0, 0x0001, true);
      cv.setUint16(2, 24, true);
      cv.setBigUint64(4, BigInt(data.length), true);
      cv.setBigUint64(12, BigInt(data.length), true);
      cv.setBigUint64(20, BigInt(headerOffset), true);
    }
    const c = new Uint8Array(46 + nameBytes.length + cextra.length);
    const cv = new DataView(c.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, cbig ? 45 : 20, true);
    setSharedFields(cv, 6, cbig, crc, data.length, nameBytes.length, cextra.length);
    cv.setUint32(42, cbig ? U32 : headerOffset, true);
    c.set(nameBytes, 46);
    c.set(cextra, 46 + nameBytes.length);
    this.#central.push(c);
    this.#count++;
  }

  /** Write the central directory (and zip64 end records when needed). */
  finish(): void {
    const cdOffset = this.#offset;
    let cdSize = 0;
    for (const c of this.#central) {
      writeAll(this.#file, c);
      cdSize += c.length;
    }
    const end = cdOffset + cdSize;
    const big = cdOffset >= U32 || this.#count >= 0xffff;
    if (big) {
      const r = new Uint8Array(56 + 20);
      const v = new DataView(r.buffer);
      v.setUint32(0, 0x06064b50, true);
      v.setBigUint64(4, 44n, true);
      v.setUint16(12, 45, true);
      v.setUint16(14, 45, true);
      v.setBigUint64(24, BigInt(this.#count), true);
      v.setBigUint64(32, BigInt(this.#count), true);
      v.setBigUint64(40, BigInt(cdSize), true);
      v.setBigUint64(48, BigInt(cdOffset), true);
      v.setUint32(56, 0x07064b50, true);
      v.setBigUint64(56 + 8, BigInt(end), true);
      v.setUint32(56 + 16, 1, true);
      writeAll(this.#file, r);
    }
    const e = new Uint8Array(22);
    const ev = new DataView(e.buffer);
    ev.setUint32(0, 0x06054b50, true);
    ev.setUint16(8, big ? 0xffff : this.#count, true);
    ev.setUint16(10, big ? 0xffff : this.#count, true);
    ev.setUint32(12, big ? U32 : cdSize, true);
    ev.setUint32(16, big ? U32 : cdOffset, true);
    writeAll(this.#file, e);
  }
}
