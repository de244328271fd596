// Line charts of (x, y) series on uPlot, sized to their container and redrawn at most once a frame.

import uPlot from "./vendor/uplot/uPlot.esm.js";
import { fmtNumber, h } from "./dom.js";

const WHOLE_INCREMENTS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500].flatMap((n) => [n, n * 1000, n * 1e6])
  .sort((a, b) => a - b);
const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"];

export class LineChart {
  // series: [{label}] – one y series per entry, all on the same x (step, or evaluation number).
  constructor(container, { title, series, xLabel = "step", height = 220, points = false }) {
    this.container = container;
    this.series = series;
    this.xs = [];
    this.ys = series.map(() => []);
    this.frame = 0;
    this.titleId = `chart-${Math.random().toString(36).slice(2)}`;
    this.latest = h("span", { class: "latest" });
    this.empty = h("p", { class: "chart-empty" }, "No points yet.");
    this.canvasBox = h("div", { class: "chart-canvas" });
    container.classList.add("chart");
    container.replaceChildren(
      h("div", { class: "chart-head" }, h("h3", { id: this.titleId }, title), this.latest),
      this.canvasBox, this.empty);
    container.setAttribute("role", "figure");
    container.setAttribute("aria-labelledby", this.titleId);
    container.dataset.points = "0";
    const opts = {
      width: Math.max(240, container.clientWidth || 480),
      height,
      scales: { x: { time: false } },
      axes: [
        // Steps and evaluation numbers are whole: no ticks between them.
        { label: xLabel, stroke: "#475569", grid: { stroke: "#e2e8f0" }, incrs: WHOLE_INCREMENTS },
        { stroke: "#475569", grid: { stroke: "#e2e8f0" }, size: 64, values: (u, vals) => vals.map((v) => fmtNumber(v, 3)) },
      ],
      legend: { show: series.length > 1 },
      series: [
        { label: xLabel },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: s.color || PALETTE[i % PALETTE.length],
          width: 1.5,
          spanGaps: true,
          points: { show: points, size: 6 },
          value: (u, v) => fmtNumber(v),
        })),
      ],
      cursor: { drag: { x: true, y: false } },
    };
    this.plot = new uPlot(opts, [this.xs, ...this.ys], this.canvasBox);
    this.resizer = new ResizeObserver(() => {
      const width = Math.max(240, this.container.clientWidth);
      if (Math.abs(width - this.plot.width) > 1) this.plot.setSize({ width, height });
    });
    this.resizer.observe(container);
    this.render();
  }

  get size() { return this.xs.length; }
  get lastX() { return this.xs.length ? this.xs[this.xs.length - 1] : null; }

  // Replace everything: rows of [x, y0, y1, …] sorted by x.
  setRows(rows) {
    this.xs = rows.map((r) => r[0]);
    this.ys = this.series.map((_, i) => rows.map((r) => r[i + 1] ?? null));
    this.schedule();
  }

  // Replace everything up to the last x of `rows`, keeping the points already drawn after it
  // (live points that arrived while the rows were being fetched).
  mergeRows(rows) {
    const last = rows.length ? rows[rows.length - 1][0] : -Infinity;
    const tail = [];
    this.xs.forEach((x, i) => { if (x > last) tail.push([x, ...this.ys.map((ys) => ys[i])]); });
    this.setRows([...rows, ...tail]);
  }

  // Add one x with its values; an x at or before the last one is ignored (no duplicates).
  append(x, values) {
    if (this.xs.length && x <= this.xs[this.xs.length - 1]) return false;
    this.xs.push(x);
    this.series.forEach((_, i) => this.ys[i].push(values[i] ?? null));
    this.schedule();
    return true;
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); });
    // Hidden tabs get no frames; the data attribute still follows at once.
    this.container.dataset.points = String(this.xs.length);
  }

  render() {
    this.plot.setData([this.xs, ...this.ys]);
    this.container.dataset.points = String(this.xs.length);
    this.empty.hidden = this.xs.length > 0;
    const last = this.ys.map((ys) => ys[ys.length - 1]).find((v) => v !== null && v !== undefined);
    this.latest.textContent = this.xs.length ? `${fmtNumber(last)} @ ${this.lastX}` : "";
  }

  destroy() {
    this.resizer.disconnect();
    this.plot.destroy();
  }
}
