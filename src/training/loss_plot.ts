/**
 * A loss curve as a self-contained SVG (no dependencies; opens in any browser and renders
 * on GitHub). Written at the end of every training run into the output directory.
 */

/** One point of the curve. */
export interface LossPoint {
  step: number;
  loss: number;
}

/** Render `points` as an SVG line chart with axes, ticks and a title. */
export function lossCurveSvg(points: readonly LossPoint[], title: string): string {
  const width = 640, height = 360;
  const left = 60, right = 20, top = 36, bottom = 44;
  const plotW = width - left - right, plotH = height - top - bottom;
  const finite = points.filter((p) => Number.isFinite(p.loss));
  const steps = finite.map((p) => p.step);
  const losses = finite.map((p) => p.loss);
  const x0 = Math.min(...steps, 0), x1 = Math.max(...steps, 1);
  let y0 = Math.min(...losses, Infinity), y1 = Math.max(...losses, -Infinity);
  if (!Number.isFinite(y0)) [y0, y1] = [0, 1];
  if (y1 - y0 < 1e-9) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  const sx = (s: number) => left + ((s - x0) / (x1 - x0 || 1)) * plotW;
  const sy = (l: number) => top + (1 - (l - y0) / (y1 - y0)) * plotH;
  const path = finite.map((p, i) =>
    `${i ? "L" : "M"}${sx(p.step).toFixed(1)},${sy(p.loss).toFixed(1)}`
  )
    .join(" ");
  const ticks: string[] = [];
  for (let i = 0; i <= 4; i++) {
    const v = y0 + ((y1 - y0) * i) / 4;
    const y = sy(v).toFixed(1);
    ticks.push(
      `<line x1="${left}" x2="${left + plotW}" y1="${y}" y2="${y}" stroke="#ddd"/>` +
        `<text x="${left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${
          v.toFixed(3)
        }</text>`,
    );
    const s = x0 + ((x1 - x0) * i) / 4;
    const x = sx(s).toFixed(1);
    ticks.push(
      `<text x="${x}" y="${top + plotH + 16}" text-anchor="middle">${Math.round(s)}</text>`,
    );
  }
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`,
    ...ticks,
    `<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#444"/>`,
    `<path d="${path}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>`,
    `<text x="${left + plotW / 2}" y="${height - 8}" text-anchor="middle">step</text>`,
    `<text x="14" y="${top + plotH / 2}" text-anchor="middle" ` +
    `transform="rotate(-90 14 ${top + plotH / 2})">loss</text>`,
    `</svg>`,
    "",
  ].join("\n");
}
