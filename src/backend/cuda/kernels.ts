/**
 * The kernels of kernels/*.cu: which PTX module holds each one and how its arguments
 * pack (p = 64-bit pointer, i = 32-bit int/unsigned, f = 32-bit float, in parameter
 * order). tests/ptx_test.ts checks this table against the `.param` lists of the PTX.
 */
import { check, cuda, CudaModule, KernelLauncher } from "../../../ffi/cuda.ts";
import { PTX } from "../../../kernels/ptx.ts";
import type { GpuProfiler } from "./profile.ts";

/** Module and argument kinds of each kernel. */
export const KERNELS = {
  cast_copy: { module: "elementwise", kinds: "pipii" },
  fill: { module: "elementwise", kinds: "pifi" },
  ew_add: { module: "elementwise", kinds: "pipipii" },
  ew_mul: { module: "elementwise", kinds: "pipipii" },
  ew_axpy: { module: "elementwise", kinds: "pipifi" },
  ew_scale: { module: "elementwise", kinds: "pifi" },
  add_bias: { module: "elementwise", kinds: "pipiii" },
  bias_grad: { module: "elementwise", kinds: "pipiii" },
  reduce_partial: { module: "elementwise", kinds: "ppiii" },
  reduce_final: { module: "elementwise", kinds: "ppi" },
  dropout_mask: { module: "elementwise", kinds: "piiifi" },
  embedding_fwd: { module: "elementwise", kinds: "pippiiii" },
  embedding_bwd: { module: "elementwise", kinds: "pipipii" },
  kv_cache_write: { module: "elementwise", kinds: "pipiiiiii" },
  adamw: { module: "elementwise", kinds: "pipipipiiffffffff" },
  rmsnorm_fwd: { module: "layers", kinds: "pipipipiiif" },
  rmsnorm_bwd_dx: { module: "layers", kinds: "pipipipipiii" },
  rmsnorm_fwd_vec: { module: "layers", kinds: "pipipipiiif" },
  rmsnorm_bwd_dx_vec: { module: "layers", kinds: "pipipipipiii" },
  rmsnorm_bwd_dw: { module: "layers", kinds: "pipipipiii" },
  rmsnorm_dw_partial: { module: "layers", kinds: "ppipipiiii" },
  rope: { module: "layers", kinds: "pippiiiiiiiip" },
  rope_partial: { module: "layers", kinds: "pippiiiiiiiiip" },
  swiglu_fwd: { module: "layers", kinds: "pipipii" },
  swiglu_bwd: { module: "layers", kinds: "pipipipipii" },
  geglu_fwd: { module: "geglu", kinds: "pipipii" },
  geglu_bwd: { module: "geglu", kinds: "pipipipipii" },
  cross_entropy: { module: "layers", kinds: "pipipipiif" },
  distill_cross_entropy: { module: "distill", kinds: "pipipipipipiiff" },
  attn_fwd: { module: "attention", kinds: "pipipipipiiiiiiiifp" },
  attn_fwd_tiled: { module: "attention", kinds: "pipipipipiiiiiiiifp" },
  attn_bwd_dsum: { module: "attention", kinds: "ppipiiiii" },
  attn_bwd_dq: { module: "attention", kinds: "pipipipipipipiiiiifp" },
  attn_bwd_dkdv: { module: "attention", kinds: "pipipipipipipipiiiiifp" },
  attn_fwd_var: { module: "attention_variant", kinds: "pipipipipiiiiiiiifpif" },
  attn_bwd_dq_var: { module: "attention_variant", kinds: "pipipipipipipiiiiifpif" },
  attn_bwd_dkdv_var: { module: "attention_variant", kinds: "pipipipipipipipiiiiifpif" },
  logit_softcap: { module: "attention_variant", kinds: "piif" },
  logit_softcap_bwd: { module: "attention_variant", kinds: "pipiif" },
  flash_fwd_64: { module: "flash_attention", kinds: "pppppiiiiiifp" },
  flash_fwd_128: { module: "flash_attention", kinds: "pppppiiiiiifp" },
  flash_bwd_64: { module: "flash_attention", kinds: "ppipippppppiiiifp" },
  flash_bwd_128: { module: "flash_attention", kinds: "ppipippppppiiiifp" },
  dora_norm: { module: "dora", kinds: "pppippfii" },
  scale_columns: { module: "dora", kinds: "pipipii" },
  dora_mag_bwd: { module: "dora", kinds: "ppipipii" },
  nf4_dequant: { module: "nf4", kinds: "pipppfiii" },
} as const satisfies Record<string, { module: keyof typeof PTX; kinds: string }>;

/** A kernel name. */
export type KernelName = keyof typeof KERNELS;

/** Threads per block of the 1-D elementwise kernels. */
export const THREADS = 256;

/** Blocks for a grid-stride loop over n elements (capped; the loop covers the rest). */
export function blocksFor(n: number): number {
  return Math.max(1, Math.min(Math.ceil(n / THREADS), 65536));
}

/** Dynamic shared memory a launch gets without opting in (bytes). */
const DEFAULT_SHARED_LIMIT = 48 * 1024;
/** CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES (cuda.h). */
const ATTR_MAX_DYNAMIC_SHARED = 8;

/** Loaded modules plus a launcher that packs arguments by the table above. */
export class KernelSet {
  private readonly modules = new Map<string, CudaModule>();
  private readonly launcher: KernelLauncher;
  private readonly fns = new Map<KernelName, Deno.PointerValue>();
  /** Dynamic shared memory each kernel has opted in to, where above the default. */
  private readonly sharedOptIn = new Map<KernelName, number>();
  /** Set by the backend: while it is active every launch is timed under its name. */
  profiler: GpuProfiler | null = null;

  constructor(stream: Deno.PointerValue) {
    for (const [name, text] of Object.entries(PTX)) {
      this.modules.set(name, CudaModule.load(name, text));
    }
    this.launcher = new KernelLauncher(stream);
  }

  /** Launch `name` with `args` in parameter order (`label`: the profiler's name for it). */
  run(
    name: KernelName,
    grid: number | [number, number, number],
    block: number,
    sharedBytes: number,
    args: readonly (number | bigint)[],
    label: string = name,
  ): void {
    let f = this.fns.get(name);
    if (f === undefined) {
      f = this.modules.get(KERNELS[name].module)!.fn(name);
      this.fns.set(name, f);
    }
    if (sharedBytes > (this.sharedOptIn.get(name) ?? DEFAULT_SHARED_LIMIT)) {
      // Above 48 KiB a kernel must opt in (sm_80: up to 163 KiB, sm_90: 227 KiB).
      check(
        "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)",
        cuda().cuFuncSetAttribute(f, ATTR_MAX_DYNAMIC_SHARED, sharedBytes),
      );
      this.sharedOptIn.set(name, sharedBytes);
    }
    const g: [number, number, number] = typeof grid === "number" ? [grid, 1, 1] : grid;
    const p = this.profiler;
    const t = p !== null && p.active ? p.before() : -1;
    this.launcher.launch(name, f, g, [block, 1, 1], sharedBytes, KERNELS[name].kinds, args);
    if (t >= 0) p!.after(t, label, "kernel");
  }

  /** Launch a grid-stride elementwise kernel over n elements. */
  run1d(name: KernelName, n: number, args: readonly (number | bigint)[], label?: string): void {
    if (n <= 0) return;
    this.run(name, blocksFor(n), THREADS, 0, args, label);
  }
}
