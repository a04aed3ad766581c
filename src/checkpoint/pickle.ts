/**
 * A restricted unpickler for PyTorch checkpoints. It never executes anything: it accepts
 * only the opcodes a `torch.save` of tensors produces and only these globals:
 * torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter,
 * torch.FloatStorage / BFloat16Storage / HalfStorage and collections.OrderedDict.
 * Anything else (os.system, builtins.eval, ...) is refused with a TuneError naming the file
 * and the global. Tensors come back as `TensorRef`s pointing into the archive's storages.
 */
import { TuneError } from "../errors.ts";
import type { FileDtype } from "./dtype.ts";

/** A storage of the archive: entry `<prefix>/data/<key>`. */
export interface StorageRef {
  kind: "storage";
  key: string;
  dtype: FileDtype;
  numel: number;
}

/** A tensor view of a storage (torch._utils._rebuild_tensor_v2's arguments). */
export interface TensorRef {
  kind: "tensor";
  storage: StorageRef;
  offset: number;
  shape: number[];
  stride: number[];
}

interface GlobalRef {
  kind: "global";
  name: string;
}

const STORAGES: Record<string, FileDtype> = {
  "torch.FloatStorage": "f32",
  "torch.BFloat16Storage": "bf16",
  "torch.HalfStorage": "f16",
};
const CALLABLES = new Set([
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_parameter",
  "collections.OrderedDict",
]);

/** Unpickle `bytes` (from `file`, for messages) under the restrictions above. */
export function restrictedUnpickle(bytes: Uint8Array, file: string): unknown {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dec = new TextDecoder();
  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();
  let p = 0;
  const bad = (what: string): never => {
    throw new TuneError(
      `${file}: refusing to load, its pickle ${what}; tune loads only tensor data ` +
        `(torch.save of a state dict), re-save the checkpoint with torch.save(model.state_dict())`,
    );
  };
  const str = (n: number) => {
    const s = dec.decode(bytes.subarray(p, p + n));
    p += n;
    return s;
  };
  const line = () => {
    const end = bytes.indexOf(0x0a, p);
    if (end < 0) bad("is truncated");
    return str(end - p + 1).slice(0, -1);
  };
  const popMark = (): unknown[] => {
    const items = stack;
    stack = marks.pop() ?? bad("has an unbalanced MARK");
    return items;
  };
  const global = (module: string, name: string): GlobalRef => {
    const full = `${module}.${name}`;
    if (!(full in STORAGES) && !CALLABLES.has(full)) bad(`calls the global ${full}`);
    return { kind: "global", name: full };
  };
  const pop = () => (stack.length ? stack.pop() : bad("pops an empty stack"));

  while (p < bytes.length) {
    const op = bytes[p++];
    switch (op) {
      case 0x80: // PROTO
        p += 1;
        break;
      case 0x95: // FRAME
        p += 8;
        break;
      case 0x2e: // STOP
        return pop();
      case 0x28: // MARK
        marks.push(stack);
        stack = [];
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4b: // BININT1
        stack.push(bytes[p]);
        p += 1;
        break;
      case 0x4d: // BININT2
        stack.push(view.getUint16(p, true));
        p += 2;
        break;
      case 0x4a: // BININT
        stack.push(view.getInt32(p, true));
        p += 4;
        break;
      case 0x8a: { // LONG1
        const n = bytes[p++];
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[p + i]);
        if (n > 0 && bytes[p + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        p += n;
        stack.push(Number(v));
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        stack.push(view.getFloat64(p, false));
        p += 8;
        break;
      case 0x58: // BINUNICODE
        p += 4;
        stack.push(str(view.getUint32(p - 4, true)));
        break;
      case 0x8c: // SHORT_BINUNICODE
        p += 1;
        stack.push(str(bytes[p - 1]));
        break;
      case 0x55: // SHORT_BINSTRING
        p += 1;
        stack.push(str(bytes[p - 1]));
        break;
      case 0x71: // BINPUT
        memo.set(bytes[p++], stack[stack.length - 1]);
        break;
      case 0x72: // LONG_BINPUT
        memo.set(view.getUint32(p, true), stack[stack.length - 1]);
        p += 4;
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, stack[stack.length - 1]);
        break;
      case 0x68: // BINGET
        stack.push(memo.get(bytes[p++]));
        break;
      case 0x6a: // LONG_BINGET
        stack.push(memo.get(view.getUint32(p, true)));
        p += 4;
        break;
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: { // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x74: { // TUPLE
        const items = popMark(); // replaces `stack`, so pop before pushing
        stack.push(items);
        break;
      }
      case 0x63: { // GLOBAL
        const module = line();
        stack.push(global(module, line()));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof name !== "string" || typeof module !== "string") bad("has a bad STACK_GLOBAL");
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x51: // BINPERSID
        stack.push(persistentLoad(pop(), bad));
        break;
      case 0x52: { // REDUCE
        const args = pop();
        const fn = pop() as GlobalRef;
        stack.push(reduce(fn, args as unknown[], bad));
        break;
      }
      case 0x62: // BUILD: state of an OrderedDict (torch's `_metadata`); dropped.
        pop();
        break;
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        const d = stack[stack.length - 1];
        if (!(d instanceof Map)) bad("sets an item on a non-dict");
        (d as Map<unknown, unknown>).set(k, v);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        const d = stack[stack.length - 1];
        if (!(d instanceof Map)) bad("sets items on a non-dict");
        for (let i = 0; i + 1 < items.length; i += 2) {
          (d as Map<unknown, unknown>).set(items[i], items[i + 1]);
        }
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        const l = stack[stack.length - 1];
        if (!Array.isArray(l)) bad("appends to a non-list");
        (l as unknown[]).push(v);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        const l = stack[stack.length - 1];
        if (!Array.isArray(l)) bad("appends to a non-list");
        (l as unknown[]).push(...items);
        break;
      }
      default:
        bad(`uses opcode 0x${op.toString(16)} at byte ${p - 1}`);
    }
  }
  return bad("has no STOP");
}

function persistentLoad(pid: unknown, bad: (w: string) => never): StorageRef {
  if (!Array.isArray(pid) || pid[0] !== "storage" || pid.length < 5) {
    bad("has a persistent id that is not a tensor storage");
  }
  const [, type, key, , numel] = pid as [string, GlobalRef, string, string, number];
  const dtype = STORAGES[type?.name];
  if (!dtype) bad(`has a storage of type ${type?.name}`);
  return { kind: "storage", key: String(key), dtype, numel };
}

function reduce(fn: GlobalRef, args: unknown[], bad: (w: string) => never): unknown {
  if (fn?.kind !== "global" || !Array.isArray(args)) bad("calls something that is not a global");
  switch (fn.name) {
    case "collections.OrderedDict":
      return new Map();
    case "torch._utils._rebuild_parameter":
      return args[0];
    case "torch._utils._rebuild_tensor_v2": {
      const [storage, offset, shape, stride] = args as [StorageRef, number, number[], number[]];
      if (storage?.kind !== "storage") bad("rebuilds a tensor from something not a storage");
      return { kind: "tensor", storage, offset, shape: [...shape], stride: [...stride] };
    }
    default:
      return bad(`calls the global ${fn.name}`);
  }
}

/** Pickle opcodes for writing a flat `OrderedDict[str, Tensor]` the way torch.save does. */
export class StateDictPickler {
  #parts: number[] = [];

  #byte(...b: number[]) {
    this.#parts.push(...b);
  }
  #str(s: string) {
    const b = new TextEncoder().encode(s);
    this.#byte(
      0x58,
      b.length & 0xff,
      (b.length >>> 8) & 0xff,
      (b.length >>> 16) & 0xff,
      b.length >>> 24,
    );
    for (const x of b) this.#parts.push(x);
  }
  #int(n: number) {
    if (n >= 0 && n <= 0x7fffffff) {
      this.#byte(0x4a, n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24);
      return;
    }
    // LONG1 with 8 little-endian two's-complement bytes, for sizes past 2^31.
    let v = BigInt.asUintN(64, BigInt(n));
    this.#byte(0x8a, 8);
    for (let i = 0; i < 8; i++, v >>= 8n) this.#parts.push(Number(v & 0xffn));
  }
  #global(module: string, name: string) {
    this.#byte(0x63);
    for (const x of new TextEncoder().encode(`${module}\n${name}\n`)) this.#parts.push(x);
  }
  #tuple(xs: number[]) {
    this.#byte(0x28);
    for (const x of xs) this.#int(x);
    this.#byte(0x74);
  }
  #orderedDict() {
    this.#global("collections", "OrderedDict");
    this.#byte(0x29, 0x52); // EMPTY_TUPLE REDUCE
  }

  /**
   * Pickle `entries` (name, storage key, dtype, shape) as torch.save's
   * OrderedDict of `_rebuild_tensor_v2(persistent storage, 0, shape, contiguous stride,
   * False, OrderedDict())`.
   */
  dump(entries: { name: string; key: string; dtype: FileDtype; shape: number[] }[]): Uint8Array {
    this.#parts = [];
    this.#byte(0x80, 2);
    this.#orderedDict();
    this.#byte(0x28); // MARK for SETITEMS
    const storageName = { f32: "FloatStorage", bf16: "BFloat16Storage", f16: "HalfStorage" };
    for (const e of entries) {
      this.#str(e.name);
      this.#global("torch._utils", "_rebuild_tensor_v2");
      this.#byte(0x28); // args MARK
      this.#byte(0x28); // persistent id MARK
      this.#str("storage");
      this.#global("torch", storageName[e.dtype]);
      this.#str(e.key);
      this.#str("cpu");
      let n = 1;
      for (const d of e.shape) n *= d;
      this.#int(n);
      this.#byte(0x74, 0x51); // TUPLE BINPERSID
      this.#int(0);
      this.#tuple(e.shape);
      const stride = e.shape.map((_, i) => e.shape.slice(i + 1).reduce((a, b) => a * b, 1));
      this.#tuple(stride);
      this.#byte(0x89); // requires_grad False
      this.#orderedDict(); // backward hooks
      this.#byte(0x74, 0x52); // TUPLE REDUCE
    }
    this.#byte(0x75, 0x2e); // SETITEMS STOP
    return new Uint8Array(this.#parts);
  }
}
