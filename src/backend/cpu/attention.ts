/**
 * Causal grouped-query attention on the CPU (scale 1/sqrt(HS)). The forward saves each
 * query row's log-sum-exp; the backward recomputes the probabilities from it, as
 * FlashAttention does, so no (T, Tk) matrix is kept between passes.
 */

/**
 * out(B, T, NH, HS), lse(B, NH, T) from q(B, T, NH, HS) and k, v(B, Tcap, NKV, HS) whose
 * first Tk rows are valid; query t sits at position Tk - T + t.
 * `p` (Tk) and `acc` (HS) are scratch.
 */
export function attentionForward(
  out: Float32Array,
  lse: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  B: number,
  T: number,
  Tk: number,
  Tcap: number,
  NH: number,
  NKV: number,
  HS: number,
  p: Float64Array,
  acc: Float64Array,
): void {
  const scale = 1 / Math.sqrt(HS);
  const group = NH / NKV;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const last = Tk - T + t; // last visible key position (inclusive)
      for (let h = 0; h < NH; h++) {
        const qo = ((b * T + t) * NH + h) * HS;
        const kvh = (h / group) | 0;
        let max = -Infinity;
        for (let s = 0; s <= last; s++) {
          const ko = ((b * Tcap + s) * NKV + kvh) * HS;
          let dot = 0;
          for (let d = 0; d < HS; d++) dot += q[qo + d] * k[ko + d];
          const sc = dot * scale;
          p[s] = sc;
          if (sc > max) max = sc;
        }
        let sum = 0;
        for (let s = 0; s <= last; s++) {
          const e = Math.exp(p[s] - max);
          p[s] = e;
          sum += e;
        }
        acc.fill(0);
        for (let s = 0; s <= last; s++) {
          const vo = ((b * Tcap + s) * NKV + kvh) * HS;
          const w = p[s];
          for (let d = 0; d < HS; d++) acc[d] += w * v[vo + d];
        }
        const inv = 1 / sum;
        for (let d = 0; d < HS; d++) out[qo + d] = acc[d] * inv;
        lse[(b * NH + h) * T + t] = max + Math.log(sum);
      }
    }
  }
}

/**
 * Backward for training (Tk = Tcap = T): dq, dk, dv are written.
 * dS = P * (dP - rowsum(dout * out)), dq = scale * dS @ K, dk = scale * dS^T @ Q, dv = P^T @ dout.
 */
export function attentionBackward(
  dq: Float32Array,
  dk: Float32Array,
  dv: Float32Array,
  dout: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  out: Float32Array,
  lse: Float32Array,
  B: number,
  T: number,
  NH: number,
  NKV: number,
  HS: number,
): void {
  const scale = 1 / Math.sqrt(HS);
  const group = NH / NKV;
  dq.fill(0);
  dk.fill(0);
  dv.fill(0);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < NH; h++) {
        const qo = ((b * T + t) * NH + h) * HS;
        const kvh = (h / group) | 0;
        const l = lse[(b * NH + h) * T + t];
        let D = 0;
        for (let d = 0; d < HS; d++) D += dout[qo + d] * out[qo + d];
        for (let s = 0; s <= t; s++) {
          const ko = ((b * T + s) * NKV + kvh) * HS;
          let dot = 0;
          let dp = 0;
          for (let d = 0; d < HS; d++) {
            dot += q[qo + d] * k[ko + d];
            dp += dout[qo + d] * v[ko + d];
          }
          const pr = Math.exp(dot * scale - l);
          const ds = pr * (dp - D) * scale;
          for (let d = 0; d < HS; d++) {
            dq[qo + d] += ds * k[ko + d];
            dk[ko + d] += ds * q[qo + d];
            dv[ko + d] += pr * dout[qo + d];
          }
        }
      }
    }
  }
}
