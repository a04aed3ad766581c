/**
 * Ctrl-C (SIGINT) and SIGTERM during training. The first signal asks the loop to stop
 * after the step in progress (it then writes a resumable checkpoint and the loss curve);
 * the listeners are then removed, so a second signal ends the process at once by the
 * signal's default action. Every file the run writes goes through a temporary name and a
 * rename (src/checkpoint/atomic_write.ts), so no checkpoint file is ever half-written.
 *
 * A rank of a launched job gets the terminal's Ctrl-C and, a moment later, the launcher's
 * SIGTERM: signals within `graceMs` of the first count as one request there.
 */

/** The signals that stop a run. */
export type StopSignal = "SIGINT" | "SIGTERM";

const SIGNALS: readonly StopSignal[] = ["SIGINT", "SIGTERM"];

/** A pending stop request, from the first SIGINT or SIGTERM after `install()`. */
export class StopRequest {
  /** The first signal received (SIGINT when both came within the grace window). */
  signal: StopSignal | null = null;
  #handlers: Array<[StopSignal, () => void]> = [];
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** @param graceMs how long after the first signal further ones still count as the same request. */
  constructor(readonly graceMs = 0) {}

  /** Listen for SIGINT and SIGTERM (signals the platform cannot listen for are skipped). */
  install(): void {
    for (const sig of SIGNALS) {
      const h = () => this.#received(sig);
      try {
        Deno.addSignalListener(sig, h);
        this.#handlers.push([sig, h]);
      } catch { /* e.g. SIGTERM on Windows */ }
    }
  }

  /** Stop listening: the signals' default actions apply again. */
  uninstall(): void {
    clearTimeout(this.#timer);
    for (const [sig, h] of this.#handlers) Deno.removeSignalListener(sig, h);
    this.#handlers = [];
  }

  /** The exit status of a run stopped by the request: 130 (SIGINT), 143 (SIGTERM) or 0. */
  get exitCode(): number {
    return this.signal === "SIGINT" ? 130 : this.signal === "SIGTERM" ? 143 : 0;
  }

  #received(sig: StopSignal): void {
    if (this.signal !== null) {
      if (sig === "SIGINT") this.signal = sig;
      return;
    }
    this.signal = sig;
    if (this.graceMs > 0) this.#timer = setTimeout(() => this.uninstall(), this.graceMs);
    else this.uninstall();
  }
}

/** A command-line word quoted for a POSIX shell when it needs it. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}
