/**
 * The training loss: cross-entropy over non-ignored labels, computed by the backend's fused
 * op (torch.nn.CrossEntropyLoss / torchtune's CEWithChunkedOutputLoss semantics: the mean
 * over counted tokens). This object carries the options and maps a custom ignore_index to
 * the op's -100.
 */

/** Options of the cross-entropy loss. */
export interface CrossEntropyLoss {
  kind: "cross_entropy";
  ignoreIndex: number;
  /** torchtune's num_output_chunks (accepted; the fused op needs no chunking for correctness). */
  numOutputChunks: number;
}

/** Labels with `ignoreIndex` replaced by -100, the op's ignore value (copies only if needed). */
export function prepareLabels(loss: CrossEntropyLoss, labels: Int32Array): Int32Array {
  if (loss.ignoreIndex === -100) return labels;
  const out = new Int32Array(labels.length);
  for (let i = 0; i < labels.length; i++) {
    out[i] = labels[i] === loss.ignoreIndex ? -100 : labels[i];
  }
  return out;
}
