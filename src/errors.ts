/**
 * A user-facing error: the CLI prints its message as one line on stderr and exits non-zero,
 * with no stack trace. The message names the problem and the fix.
 * Any other thrown error is a bug in tune and is printed with its stack.
 *
 * The class lives in ffi/errors.ts (the library loaders throw it too, and ffi imports nothing
 * above it); this module is where the rest of tune takes it from.
 */
export { TuneError } from "../ffi/errors.ts";
