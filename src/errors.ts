/**
 * A user-facing error: the CLI prints its message as one line on stderr and exits non-zero,
 * with no stack trace. The message names the problem and the fix.
 * Any other thrown error is a bug in tune and is printed with its stack.
 */
export class TuneError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TuneError";
  }
}
