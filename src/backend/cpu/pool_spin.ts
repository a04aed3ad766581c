/**
 * The pool's spinning hand-off: a command in shared memory instead of a message, for work
 * that comes every few microseconds (the fused decoder's attention at batch > 1, a split
 * product between two of them). A `postMessage` round trip to the worker costs 42-66 us on
 * the 2-core bench host, as long as one layer's attention of eight aidreams260K sequences.
 *
 * The main thread writes a command into `args`, bumps SEQ and runs its own share; the worker,
 * spinning on SEQ, runs the command, stores its status and sets DONE = SEQ. After SPIN_US
 * without a command the worker sleeps on SEQ (Atomics.wait, woken by the next bump), and after
 * IDLE_MS asleep it leaves the loop (STATE = OFF) and goes back to its event loop, where
 * messages (ordinary jobs) are read. A command bumped while the worker is OFF comes with a
 * WAKE message; the worker, on leaving, stores OFF first and then looks for a pending command
 * once more, so no command is missed (a WAKE that finds none pending returns at once).
 * One command is outstanding at a time: the main thread waits for DONE before the next.
 */

/** Int32 slots of the control block. */
const SEQ = 0;
const DONE = 1;
const STATE = 2;
const STATUS = 3;
const INTS = 4;
/** Float64 command slots: [0] the command, then its arguments. */
export const SPIN_ARGS = 300;
/** STATE values. */
const OFF = 0;
const ON = 1;
/** Commands (args[0]); the worker's runner handles all but EXIT. */
export const CMD_EXIT = 1;
export const CMD_ATTN = 2;
export const CMD_GEMM = 3;
/** The message that sends an OFF worker back into the loop. */
export const WAKE = "spin";

/**
 * How long the worker spins after a command (us: longer than the products between two
 * attention commands of a 15M decode step at batch 8, ~0.8 ms) and then sleeps (ms) before
 * leaving. Only decode at batch > 1 and few-row products send commands, so the spinning does
 * not share the cores with OpenBLAS's threaded products of a training step.
 */
const SPIN_US = 1000;
const IDLE_MS = 20;
/** How long the main thread spins for the worker's DONE before it sleeps (us). */
const WAIT_SPIN_US = 2000;

/** The control block both threads map (made by the main thread, posted to the worker). */
export function spinBlock(): SharedArrayBuffer {
  return new SharedArrayBuffer(INTS * 4 + SPIN_ARGS * 8);
}

function views(sab: SharedArrayBuffer): [Int32Array, Float64Array] {
  return [new Int32Array(sab, 0, INTS), new Float64Array(sab, INTS * 4, SPIN_ARGS)];
}

/** The main thread's end. */
export class SpinChannel {
  readonly #ctl: Int32Array;
  readonly #args: Float64Array;
  readonly #wake: () => void;

  /** `wake` posts WAKE to the worker. */
  constructor(sab: SharedArrayBuffer, wake: () => void) {
    [this.#ctl, this.#args] = views(sab);
    this.#wake = wake;
  }

  /**
   * Run the command `write` puts into the argument slots on the worker while `local` runs
   * here; true when the worker ran it, false when it failed (the caller then runs that share).
   */
  run(write: (args: Float64Array) => void, local: () => void): boolean {
    const ctl = this.#ctl;
    write(this.#args);
    const seq = Atomics.load(ctl, DONE) + 1;
    Atomics.store(ctl, SEQ, seq);
    Atomics.notify(ctl, SEQ);
    if (Atomics.load(ctl, STATE) === OFF) this.#wake();
    try {
      local();
    } finally {
      // spin (the worker's share is about as long as ours; a sleeper's wake-up costs 50-100
      // us on the bench host), then sleep in 1 ms slices
      const t0 = performance.now();
      for (let n = 1; Atomics.load(ctl, DONE) !== seq; n++) {
        if ((n & 255) === 0 && performance.now() - t0 > WAIT_SPIN_US / 1000) {
          Atomics.wait(ctl, DONE, seq - 1, 1);
        }
      }
    }
    return Atomics.load(ctl, STATUS) === 1;
  }

  /** Bring the worker back to its event loop (before a message it must read). */
  stop(): void {
    if (Atomics.load(this.#ctl, STATE) !== OFF) this.run((a) => a[0] = CMD_EXIT, () => {});
  }
}

/**
 * The worker's end, called on WAKE (and after the block arrives): serves commands with `run`
 * until it has been idle for IDLE_MS or gets CMD_EXIT. A command that throws reports failure.
 */
export function serveSpin(sab: SharedArrayBuffer, run: (args: Float64Array) => void): void {
  const [ctl, args] = views(sab);
  if (Atomics.load(ctl, SEQ) === Atomics.load(ctl, DONE)) return; // a stale WAKE
  Atomics.store(ctl, STATE, ON);
  for (;;) {
    let seq = Atomics.load(ctl, SEQ);
    if (seq === Atomics.load(ctl, DONE)) {
      const t0 = performance.now();
      let n = 0;
      while ((seq = Atomics.load(ctl, SEQ)) === Atomics.load(ctl, DONE)) {
        if ((++n & 255) !== 0 || performance.now() - t0 < SPIN_US / 1000) continue;
        if (Atomics.wait(ctl, SEQ, seq, IDLE_MS) === "timed-out") {
          Atomics.store(ctl, STATE, OFF);
          if (Atomics.load(ctl, SEQ) === Atomics.load(ctl, DONE)) return;
          Atomics.store(ctl, STATE, ON); // a command came as we left: serve it
        }
      }
    }
    let status = 1;
    const exit = args[0] === CMD_EXIT;
    if (!exit) {
      try {
        run(args);
      } catch {
        status = 2;
      }
    } else Atomics.store(ctl, STATE, OFF);
    Atomics.store(ctl, STATUS, status);
    Atomics.store(ctl, DONE, seq);
    Atomics.notify(ctl, DONE);
    if (exit) return;
  }
}
