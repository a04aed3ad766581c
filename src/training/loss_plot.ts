/**
 * A loss curve as a self-contained SVG (no dependencies; opens in any browser and renders
 * on GitHub). Written at the end of every training run into the output directory.
 *
 * Axes use round ticks (1, 2 or 5 times a power of ten), the y axis starts at 0 unless the
 * losses lie far above it, a run of more than 50 steps gets a smoothed line over the faint
 * raw one, and validation losses (steps that have `val_loss`) are drawn as their own curve.
 */

/** One point of the curve; `val_loss` where validation ran at that step. */
export interface LossPoint {
  step: number;
  loss: number;
  val_loss?: number | null;
}

/** Raw points above this count get a smoothed line drawn over them. */
const SMOOTH_ABOVE = 50;

/**
 * Round tick values covering [lo, hi] with about `target` intervals: the step is 1, 2 or 5
 * times a power of ten, and the ticks are its multiples.
 */
export function roundTicks(lo: number, hi: number, target = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / target;
  const pow = 10 ** Math.floor(Math.log10(raw));
  // the 1-2-5 step nearest the raw interval (on a log scale)
  const step = [1, 2, 5, 10].map((m) => m * pow).reduce((a, b) =>
    Math.abs(Math.log(b / raw)) < Math.abs(Math.log(a / raw)) ? b : a
  );
  const first = Math.ceil(lo / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let v = first; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

/** A tick label: no more decimals than the tick step needs. */
function label(v: number, step: number): string {
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return v.toFixed(Math.min(decimals, 6));
}

/**
 * A local linear fit over a window of about a tenth of the points, centred where it can be
 * and shifted inward at the ends, evaluated at each point: it follows the trend (without the
 * lag of an exponential average, and without flattening the ends) and leaves out the
 * step-to-step noise.
 */
export function smoothLosses(values: readonly number[]): number[] {
  const n = values.length;
  const half = Math.max(1, Math.min(Math.floor(n / 20), Math.floor((n - 1) / 2)));
  // prefix sums of y, x*y, x, x*x for O(1) least squares over any window
  const sy = new Float64Array(n + 1), sxy = new Float64Array(n + 1);
  const sx = new Float64Array(n + 1), sxx = new Float64Array(n + 1);
  for (let i = 0; i < n; i++) {
    sy[i + 1] = sy[i] + values[i];
    sxy[i + 1] = sxy[i] + i * values[i];
    sx[i + 1] = sx[i] + i;
    sxx[i + 1] = sxx[i] + i * i;
  }
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const lo = Math.max(0, Math.min(i - half, n - 1 - 2 * half));
    const hi = Math.min(n - 1, lo + 2 * half);
    const m = hi - lo + 1;
    const Sy = sy[hi + 1] - sy[lo], Sxy = sxy[hi + 1] - sxy[lo];
    const Sx = sx[hi + 1] - sx[lo], Sxx = sxx[hi + 1] - sxx[lo];
    const den = m * Sxx - Sx * Sx;
    const slope = den > 0 ? (m * Sxy - Sx * Sy) / den : 0;
    out.push(Sy / m + slope * (i - Sx / m));
  }
  return out;
}

/** The y range: from 0, unless the lowest loss is far above it (then from near the lowest). */
function yRange(values: readonly number[]): [number, number] {
  if (values.length === 0) return [0, 1];
  const lo = Math.min(...values), hi = Math.max(...values);
  const y1 = hi > 0 ? hi * 1.05 : 1;
  // "far above 0": the curve would use less than a third of the height starting from 0
  if (lo > 0 && hi - lo < lo / 2) {
    const span = Math.max(hi - lo, Math.abs(hi) * 1e-3, 1e-9);
    return [lo - span * 0.1, hi + span * 0.1];
  }
  return [Math.min(0, lo), y1];
}

/** Render `points` as an SVG line chart with axes, round ticks, a legend and a title. */
export function lossCurveSvg(points: readonly LossPoint[], title: string): string {
  const width = 640, height = 360;
  const left = 60, right = 20, top = 36, bottom = 44;
  const plotW = width - left - right, plotH = height - top - bottom;
  const train = points.filter((p) => Number.isFinite(p.loss));
  const val = points.filter((p) => p.val_loss != null && Number.isFinite(p.val_loss)) as Array<
    LossPoint & { val_loss: number }
  >;
  const smooth = train.length > SMOOTH_ABOVE ? smoothLosses(train.map((p) => p.loss)) : null;
  const all = [...train.map((p) => p.loss), ...val.map((p) => p.val_loss), ...(smooth ?? [])];
  const steps = points.map((p) => p.step);
  const x0 = Math.min(...steps, 0), x1 = Math.max(...steps, 1);
  const [y0, y1] = yRange(all);
  const sx = (s: number) => left + ((s - x0) / (x1 - x0 || 1)) * plotW;
  const sy = (l: number) => top + (1 - (l - y0) / (y1 - y0)) * plotH;
  const line = (xs: readonly number[], ys: readonly number[]) =>
    xs.map((x, i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(ys[i]).toFixed(1)}`).join(" ");

  const ticks: string[] = [];
  const yTicks = roundTicks(y0, y1);
  const yStep = yTicks.length > 1 ? yTicks[1] - yTicks[0] : 1;
  for (const v of yTicks) {
    const y = sy(v).toFixed(1);
    ticks.push(
      `<line x1="${left}" x2="${left + plotW}" y1="${y}" y2="${y}" stroke="#ddd"/>` +
        `<text x="${left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${
          label(v, yStep)
        }</text>`,
    );
  }
  // steps are whole numbers: never a tick step below 1
  const xTicks = roundTicks(x0, x1).filter((s) => Number.isInteger(s));
  for (const s of xTicks) {
    ticks.push(
      `<text x="${sx(s).toFixed(1)}" y="${top + plotH + 16}" text-anchor="middle">${s}</text>`,
    );
  }

  const curves: string[] = [];
  const legend: Array<[string, string]> = [];
  const trainSteps = train.map((p) => p.step), trainLoss = train.map((p) => p.loss);
  if (train.length > SMOOTH_ABOVE) {
    curves.push(
      `<path d="${line(trainSteps, trainLoss)}" fill="none" stroke="#1f77b4" ` +
        `stroke-opacity="0.25" stroke-width="1"/>`,
      `<path d="${line(trainSteps, smooth!)}" fill="none" stroke="#1f77b4" ` +
        `stroke-width="2"/>`,
    );
    legend.push(["#1f77b4", "training loss (smoothed; raw faint)"]);
  } else {
    curves.push(
      `<path d="${line(trainSteps, trainLoss)}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>`,
    );
    legend.push(["#1f77b4", "training loss"]);
  }
  if (val.length) {
    const vs = val.map((p) => p.step), vl = val.map((p) => p.val_loss);
    curves.push(`<path d="${line(vs, vl)}" fill="none" stroke="#d62728" stroke-width="1.5"/>`);
    for (let i = 0; i < vs.length; i++) {
      curves.push(
        `<circle cx="${sx(vs[i]).toFixed(1)}" cy="${
          sy(vl[i]).toFixed(1)
        }" r="2.5" fill="#d62728"/>`,
      );
    }
    legend.push(["#d62728", "validation loss"]);
  }
  const legendSvg = legend.map(([color, text], i) => {
    const y = top + 14 + i * 16;
    return `<line x1="${left + plotW - 230}" x2="${left + plotW - 210}" y1="${y}" y2="${y}" ` +
      `stroke="${color}" stroke-width="2"/>` +
      `<text x="${left + plotW - 205}" y="${y}" dominant-baseline="middle">${text}</text>`;
  });
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`,
    ...ticks,
    `<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#444"/>`,
    ...curves,
    ...legendSvg,
    `<text x="${left + plotW / 2}" y="${height - 8}" text-anchor="middle">step</text>`,
    `<text x="14" y="${top + plotH / 2}" text-anchor="middle" ` +
    `transform="rotate(-90 14 ${top + plotH / 2})">loss</text>`,
    `</svg>`,
    "",
  ].join("\n");
}

/** The GRPO recipes' reward curve: mean reward per step, and the success rate beside it. */
export function rewardCurveSvg(
  steps: readonly { step: number; reward?: number; success_rate?: number }[],
): string {
  return lossCurveSvg(
    steps.map((m) => ({ step: m.step, loss: m.reward ?? NaN, val_loss: m.success_rate })),
    "GRPO: mean reward and success rate per step",
  ).replaceAll("training loss", "mean reward").replaceAll("validation loss", "success rate")
    .replaceAll(">loss</text>", ">reward</text>");
}
