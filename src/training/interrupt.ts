/**
 * Ctrl-C (SIGINT) and SIGTERM during training. The first signal asks the loop to stop
 * after the step in progress (it then writes a resumable checkpoint and the loss curve);
 * then nothing listens any more, so a second signal ends the process at once by the
 * signal's default action, even in the middle of a step. Every file the run writes goes
 * through a temporary name and a rename (src/checkpoint/atomic_write.ts), so no checkpoint
 * file is ever half-written.
 *
 * The listeners live in a small worker: the training thread computes synchronously for a
 * whole step, so it could not take a signal before the step ends. The worker notes the
 * first signal in shared memory, which the loop reads after each step.
 *
 * A rank of a launched job gets the terminal's Ctrl-C and, a moment later, the launcher's
 * SIGTERM: signals within `graceMs` of the first count as one request there.
 */

/** The signals that stop a run. */
export type StopSignal = "SIGINT" | "SIGTERM";

/** The worker: listens, notes the first signal (2 or 15) in the shared cell, then lets go. */
const WORKER = `
let cell, graceMs, timer;
const signals = [["SIGINT", 2], ["SIGTERM", 15]];
const handlers = [];
const stop = () => {
  clearTimeout(timer);
  for (const [sig, h] of handlers.splice(0)) Deno.removeSignalListener(sig, h);
};
self.onmessage = (e) => {
  cell = new Int32Array(e.data.buffer);
  graceMs = e.data.graceMs;
  for (const [sig, code] of signals) {
    const h = () => {
      if (Atomics.load(cell, 0) !== 0) {
        if (code === 2) Atomics.store(cell, 0, 2);
        return;
      }
      Atomics.store(cell, 0, code);
      if (graceMs > 0) timer = setTimeout(stop, graceMs);
      else stop();
    };
    try {
      Deno.addSignalListener(sig, h);
      handlers.push([sig, h]);
    } catch { /* a signal this platform cannot listen for (SIGTERM on Windows) */ }
  }
  postMessage("listening");
};
`;

/** A pending stop request, from the first SIGINT or SIGTERM after `install()`. */
export class StopRequest {
  readonly #cell = new Int32Array(new SharedArrayBuffer(4));
  #worker: Worker | null = null;

  /** @param graceMs how long after the first signal further ones still count as the same request. */
  constructor(readonly graceMs = 0) {}

  /** Listen for SIGINT and SIGTERM until `uninstall()`. */
  async install(): Promise<void> {
    if (this.#worker) return;
    const url = URL.createObjectURL(new Blob([WORKER], { type: "application/javascript" }));
    const worker = new Worker(url, { type: "module" });
    this.#worker = worker;
    await new Promise<void>((resolve, reject) => {
      worker.onmessage = () => resolve();
      worker.onerror = (e) => reject(new Error(`signal listener: ${e.message}`));
      worker.postMessage({ buffer: this.#cell.buffer, graceMs: this.graceMs });
    });
    URL.revokeObjectURL(url);
  }

  /** Stop listening: the signals' default actions apply again. */
  uninstall(): void {
    this.#worker?.terminate();
    this.#worker = null;
  }

  /** The first signal received (SIGINT when both came within the grace window), or null. */
  get signal(): StopSignal | null {
    const code = Atomics.load(this.#cell, 0);
    return code === 2 ? "SIGINT" : code === 15 ? "SIGTERM" : null;
  }

  /** The exit status of a run stopped by the request: 130 (SIGINT), 143 (SIGTERM) or 0. */
  get exitCode(): number {
    const s = this.signal;
    return s === "SIGINT" ? 130 : s === "SIGTERM" ? 143 : 0;
  }
}

/** A command-line word quoted for a POSIX shell when it needs it. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}
