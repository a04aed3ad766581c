/** Errors raised by the distributed layer. */
import { TuneError } from "../errors.ts";

/**
 * A failure of the job's process group: a rank was lost (its process exited, crashed or
 * hung) or the ranks disagreed about which collective comes next. It is a `TuneError`, so
 * the CLI prints its one-line message and exits non-zero.
 */
export class DistributedError extends TuneError {
  /**
   * @param message one line naming the problem and what to look at.
   * @param lostRank the rank that was lost, or -1 when no single rank is to blame.
   */
  constructor(message: string, readonly lostRank = -1) {
    super(message);
    this.name = "DistributedError";
  }
}
