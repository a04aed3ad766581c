/**
 * exp() for the CPU backend's softmax, cross-entropy and SiLU loops: about twice as fast
 * as V8's Math.exp, with a relative error below 1e-8 (results stored as fp32 differ from
 * Math.exp's by at most one fp32 ulp, in under 1% of cases).
 * Method: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), exp(r) by its degree-7
 * Taylor polynomial in float64, times 2^k from a table. The polynomial is evaluated in
 * Estrin's scheme (a dependency chain of 4 multiply-adds instead of Horner's 7): about 10-17 %
 * faster in the exp-heavy loops, and equal after rounding to fp32 on every input tried.
 */

// Exported for the hottest loops, which inline the same steps (V8 does not inline fastExp
// there, and the call costs about a third of the loop).
export const LOG2E = 1.4426950408889634;
export const LN2_HI = 0.693145751953125; // ln2 rounded to 16 bits: k * LN2_HI is exact
export const LN2_LO = 1.4286068203094173e-6; // ln2 - LN2_HI
/** 1.5 * 2^52: (y + MAGIC) - MAGIC rounds y to the nearest integer for |y| < 2^51. */
export const MAGIC = 6755399441055744;
/** POW2[k + 1075] = 2^k for k in -1075..1024 (0 and Infinity at the ends). */
export const POW2 = new Float64Array(2100);
for (let i = 0; i < POW2.length; i++) POW2[i] = Math.pow(2, i - 1075);

/** e^x in float64 (relative error < 1e-8); 0 below -745, Infinity above 709.7, NaN for NaN. */
export function fastExp(x: number): number {
  if (x < -745.2) return 0; // also -Infinity
  if (x > 709.7) return Infinity;
  const kf = (x * LOG2E + MAGIC) - MAGIC;
  const r = (x - kf * LN2_HI) - kf * LN2_LO;
  return expPoly(r) * POW2[(kf | 0) + 1075];
}

/**
 * e^r for |r| <= ln2/2: the degree-7 Taylor polynomial in Estrin's scheme,
 * (1 + r + r^2/2 + r^3/6) + r^4 ((1/24 + r/120) + r^2 (1/720 + r/5040)).
 * V8 inlines it into the hot loops.
 */
export function expPoly(r: number): number {
  const r2 = r * r;
  return ((1 + r) + r2 * (0.5 + r * 0.16666666666666666)) +
    (r2 * r2) *
      ((0.041666666666666664 + r * 0.008333333333333333) +
        r2 * (0.001388888888888889 + r * 0.0001984126984126984));
}
