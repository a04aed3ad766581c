/**
 * The user-facing error class. It is defined here, in the lowest layer, because the library
 * loaders (library_path.ts, openblas.ts) are the first code that must tell a user what to fix
 * (a missing libcuda, a bad TUNE_OPENBLAS_PATH); everything above imports it through
 * src/errors.ts, so imports keep pointing down.
 *
 * A TuneError's message is one line naming the problem and the fix: the CLI prints it on
 * stderr and exits non-zero, with no stack trace. Any other thrown error is a bug in tune and
 * is printed with its stack.
 */
export class TuneError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TuneError";
  }
}
