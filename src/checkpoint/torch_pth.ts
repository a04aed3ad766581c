/**
 * PyTorch `.pth` files (torch.save's zip format): a pickle `<prefix>/data.pkl` describing
 * tensors, plus one stored entry `<prefix>/data/<key>` per storage. Reading goes through the
 * restricted unpickler (pickle.ts) and reads each tensor's bytes through a file handle, so
 * memory grows by the fp32 result, not by the file. Writing produces an archive that
 * `torch.load(..., weights_only=True)` accepts.
 */
import { TuneError } from "../errors.ts";
import { atomicWriteWith, readAt } from "./atomic_write.ts";
import { decodeToF32, dtypeBytes, encodeFromF32, type FileDtype } from "./dtype.ts";
import { restrictedUnpickle, StateDictPickler, type StorageRef, type TensorRef } from "./pickle.ts";
import { type HostTensor, numel } from "../params/state_dict.ts";
import { listZip, readZipEntry, type ZipEntry, ZipWriter } from "./zip.ts";

/**
 * An open torch.save archive: the pickle is parsed once, tensors are read one at a time.
 * Top level is a dict of tensors, or a dict with one `model`/`state_dict` entry holding one.
 */
export class PthReader {
  readonly path: string;
  #file: Deno.FsFile;
  #refs = new Map<string, TensorRef>();
  #entries = new Map<string, ZipEntry>();
  #prefix: string;

  constructor(path: string) {
    this.path = path;
    try {
      this.#file = Deno.openSync(path, { read: true });
    } catch (e) {
      throw new TuneError(`cannot open ${path}: ${(e as Error).message}`);
    }
    try {
      const magic = readAt(this.#file, 0, 4);
      if (magic[0] !== 0x50 || magic[1] !== 0x4b) {
        throw new TuneError(
          `${path} is not a zip-format torch checkpoint (legacy torch.save format?); ` +
            `re-save it with torch>=1.6 torch.save`,
        );
      }
      const entries = listZip(this.#file, path);
      const pkl = entries.find((e) => e.name.endsWith("data.pkl") && !e.name.includes("/data/"));
      if (!pkl) throw new TuneError(`${path}: no data.pkl in the archive; not a torch.save file`);
      this.#prefix = pkl.name.slice(0, pkl.name.length - "data.pkl".length);
      this.#entries = new Map(entries.map((e) => [e.name, e]));
      let top = restrictedUnpickle(readZipEntry(this.#file, pkl, path), path);
      if (top instanceof Map && top.size === 1) {
        const only = [...top.values()][0];
        if (only instanceof Map && (top.has("model") || top.has("state_dict"))) top = only;
      }
      if (!(top instanceof Map)) {
        throw new TuneError(`${path}: expected a dict of tensors at the top of the pickle`);
      }
      for (const [k, v] of top) {
        const ref = v as TensorRef;
        if (ref?.kind !== "tensor") {
          throw new TuneError(
            `${path}: entry ${String(k)} is not a tensor; tune reads state dicts only`,
          );
        }
        this.#refs.set(String(k), ref);
      }
    } catch (e) {
      this.#file.close();
      throw e;
    }
  }

  /** Tensor names in file order. */
  names(): string[] {
    return [...this.#refs.keys()];
  }

  /** Shape of a tensor (no data read). */
  shape(name: string): number[] {
    return this.#ref(name).shape;
  }

  /** Read one tensor as fp32. */
  read(name: string): HostTensor {
    const ref = this.#ref(name);
    const entry = this.#entries.get(`${this.#prefix}data/${ref.storage.key}`);
    if (!entry) {
      throw new TuneError(`${this.path}: tensor ${name} has no storage data/${ref.storage.key}`);
    }
    return readTensor(this.#file, entry, ref, name, this.path);
  }

  close(): void {
    this.#file.close();
  }

  #ref(name: string): TensorRef {
    const r = this.#refs.get(name);
    if (!r) throw new TuneError(`${this.path}: no tensor ${name}`);
    return r;
  }
}

/** Read every tensor of the state dict saved in `path` (keys as in the file). */
export function readPth(
  path: string,
  options: { filter?: (name: string) => boolean } = {},
): Map<string, HostTensor> {
  const r = new PthReader(path);
  try {
    const out = new Map<string, HostTensor>();
    for (const n of r.names()) if (!options.filter || options.filter(n)) out.set(n, r.read(n));
    return out;
  } finally {
    r.close();
  }
}

function readTensor(
  file: Deno.FsFile,
  entry: ZipEntry,
  ref: TensorRef,
  name: string,
  path: string,
): HostTensor {
  const s: StorageRef = ref.storage;
  const eb = dtypeBytes(s.dtype);
  const n = numel(ref.shape);
  if (entry.size < s.numel * eb) {
    throw new TuneError(
      `${path}: tensor ${name} storage has ${entry.size} bytes, expected ${s.numel * eb}; ` +
        `the file is truncated`,
    );
  }
  const contiguous = ref.stride.every((st, i) =>
    ref.shape[i] === 1 || st === numel(ref.shape.slice(i + 1))
  );
  if (contiguous) {
    const bytes = readZipEntry(file, entry, path, ref.offset * eb, n * eb);
    return { shape: ref.shape, data: decodeToF32(bytes, s.dtype), sourceDtype: s.dtype };
  }
  // A strided view (rare in checkpoints): read the storage and gather.
  const all = decodeToF32(readZipEntry(file, entry, path), s.dtype);
  const data = new Float32Array(n);
  const idx = new Array(ref.shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    let src = ref.offset;
    for (let d = 0; d < idx.length; d++) src += idx[d] * ref.stride[d];
    data[i] = all[src];
    for (let d = idx.length - 1; d >= 0; d--) {
      if (++idx[d] < ref.shape[d]) break;
      idx[d] = 0;
    }
  }
  return { shape: ref.shape, data, sourceDtype: s.dtype };
}

/**
 * Write tensors as a torch.save zip (`<archive>/data.pkl`, `<archive>/data/<i>`,
 * `<archive>/version`), through a temporary file. `dtype` "source" keeps each tensor's
 * `sourceDtype` (f32 when unset).
 */
export function writePth(
  path: string,
  tensors: Iterable<[string, HostTensor]>,
  options: { dtype?: FileDtype | "source"; archiveName?: string } = {},
): void {
  const list = [...tensors];
  const archive = options.archiveName ?? "archive";
  const want = options.dtype ?? "source";
  const entries = list.map(([name, t], i) => ({
    name,
    key: String(i),
    dtype: want === "source" ? (t.sourceDtype ?? "f32") : want,
    shape: t.shape,
  }));
  const pickle = new StateDictPickler().dump(entries);
  atomicWriteWith(path, (file) => {
    const zip = new ZipWriter(file);
    zip.add(`${archive}/data.pkl`, pickle);
    zip.add(`${archive}/byteorder`, new TextEncoder().encode("little"));
    list.forEach(([, t], i) =>
      zip.add(`${archive}/data/${i}`, encodeFromF32(t.data, entries[i].dtype))
    );
    zip.add(`${archive}/version`, new TextEncoder().encode("3\n"));
    zip.finish();
  });
}
