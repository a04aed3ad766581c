/** The loss curve SVG: round ticks, y from 0, smoothing of long runs, the validation curve. */
import assert from "node:assert/strict";
import { lossCurveSvg, roundTicks, smoothLosses } from "../src/training/loss_plot.ts";

/** The text of every tick label (y first, then x), in order. */
function tickLabels(svg: string): string[] {
  return [
    ...svg.matchAll(/<text x="[\d.]+" y="[\d.]+" text-anchor="(?:end|middle)"[^>]*>([^<]*)</g),
  ]
    .map((m) => m[1]).filter((t) => /^-?[\d.]+$/.test(t));
}

Deno.test("roundTicks() steps by 1, 2 or 5 times a power of ten", () => {
  assert.deepEqual(roundTicks(0, 6.06), [0, 1, 2, 3, 4, 5, 6]);
  assert.deepEqual(roundTicks(0, 113), [0, 20, 40, 60, 80, 100]);
  assert.deepEqual(roundTicks(0, 75), [0, 20, 40, 60]);
  assert.deepEqual(roundTicks(3.21, 3.48), [3.25, 3.3, 3.35, 3.4, 3.45]);
  assert.deepEqual(roundTicks(0, 20), [0, 5, 10, 15, 20]);
});

Deno.test("lossCurveSvg() starts a falling loss at 0 with round tick labels", () => {
  const pts = Array.from({ length: 20 }, (_, i) => ({ step: i + 1, loss: 5.77 - i * 0.12 }));
  const labels = tickLabels(lossCurveSvg(pts, "t"));
  assert.deepEqual(labels.slice(0, 7), ["0", "1", "2", "3", "4", "5", "6"]);
  assert.ok(labels.every((l) => !l.startsWith("-")), `no negative tick: ${labels}`);
  assert.ok(labels.includes("20") && labels.includes("5"), `x ticks: ${labels}`);
});

Deno.test("lossCurveSvg() zooms to the losses when they lie far above 0", () => {
  const pts = Array.from({ length: 10 }, (_, i) => ({ step: i, loss: 3.4 - i * 0.02 }));
  const y = tickLabels(lossCurveSvg(pts, "t")).filter((l) => l.includes("."));
  assert.ok(y.length >= 3 && Number(y[0]) > 3, `y ticks near the losses: ${y}`);
});

Deno.test("lossCurveSvg() smooths runs of more than 50 steps and draws val_loss", () => {
  const pts = Array.from({ length: 80 }, (_, i) => ({
    step: i + 1,
    loss: 4 - i / 40 + (i % 2 ? 0.3 : -0.3),
    val_loss: (i + 1) % 20 === 0 ? 3.5 - i / 80 : undefined,
  }));
  const svg = lossCurveSvg(pts, "t");
  assert.match(svg, /stroke-opacity="0.25"/, "the raw line is faint");
  assert.match(svg, /training loss \(smoothed; raw faint\)/);
  assert.equal([...svg.matchAll(/<circle /g)].length, 4, "one marker per validation");
  assert.match(svg, /validation loss/);
  const short = lossCurveSvg(pts.slice(0, 30).map(({ step, loss }) => ({ step, loss })), "t");
  assert.doesNotMatch(short, /stroke-opacity|validation/);
});

Deno.test("smoothLosses() follows the trend and not the alternation", () => {
  const raw = Array.from({ length: 100 }, (_, i) => 5 - i / 50 + (i % 2 ? 1 : -1));
  const s = smoothLosses(raw);
  assert.ok(Math.abs(s[99] - (5 - 99 / 50)) < 0.4, `smoothed end ${s[99]}`);
  assert.ok(Math.abs(s[99] - s[98]) < 0.2, "no alternation left");
});
