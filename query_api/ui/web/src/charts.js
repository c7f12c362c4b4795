// One uPlot chart per metric key: several (run, split) series overlaid, each drawn as a
// min/max band plus the per-bucket last value, read from the downsampled endpoint
// (/api/v1/runs/{id}/metrics/{key}/buckets). Zoom (drag on the plot) re-queries the buckets
// of the visible range, so a 10 M-point series stays smooth and turns exact once the range
// holds fewer points than buckets; double-click returns to the whole series.
import { api, num } from "./api.js";

/* global uPlot */

export const PALETTE = [
  "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
  "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
];
const DASH = { "": [], train: [], val: [6, 4], validation: [6, 4], test: [2, 3] };

function splitLabel(split) {
  return split === "" ? "(no split)" : split;
}

export class MetricChart {
  /**
   * @param {HTMLElement} root element to render into
   * @param {{key: string, series: {runId: string, runName: string, color: string,
   *   split: string}[], x: "step"|"time", log: boolean}} opts
   */
  constructor(root, opts) {
    this.root = root;
    this.key = opts.key;
    this.series = opts.series;
    this.x = opts.x;
    this.log = opts.log;
    this.onZoom = opts.onZoom || null; // user zoom -> the panel applies it to every chart
    this.range = null; // null = whole series; else {start, end} in API units
    this.loads = 0;
    this.plot = null;
    this._seq = 0;
    root.classList.add("chart");
    root.dataset.key = this.key;
    root.dataset.series = String(this.series.length);
    root.innerHTML = "";
    const head = document.createElement("div");
    head.className = "chart-head";
    const title = document.createElement("span");
    title.className = "chart-title";
    title.textContent = this.key;
    this.status = document.createElement("span");
    this.status.className = "chart-status muted";
    const reset = document.createElement("button");
    reset.className = "link-button";
    reset.textContent = "reset zoom";
    reset.dataset.testid = "reset-zoom";
    reset.addEventListener("click", () => this.userZoom(null));
    head.append(title, this.status, reset);
    this.canvas = document.createElement("div");
    this.canvas.className = "chart-canvas";
    this.legend = document.createElement("div");
    this.legend.className = "chart-legend";
    root.append(head, this.canvas, this.legend);
    this._renderLegend();
  }

  get buckets() {
    return Math.max(50, Math.min(2000, Math.round(this.canvas.clientWidth || 600)));
  }

  /** A zoom made by the user on this chart (drag, double-click, reset). */
  userZoom(range) {
    if (this.onZoom) return this.onZoom(range);
    return this.zoom(range);
  }

  /** Re-query the visible range (null: everything) and redraw. */
  async zoom(range) {
    this.range = range;
    await this.refresh();
  }

  async refresh() {
    const seq = ++this._seq;
    this.root.classList.add("loading");
    const n = this.buckets;
    const range = this.range;
    const results = await Promise.all(
      this.series.map((s) =>
        api
          .buckets(s.runId, this.key, {
            n,
            split: s.split,
            x: this.x,
            start: range ? range.start : null,
            end: range ? range.end : null,
          })
          .catch((err) => ({ buckets: [], error: err })),
      ),
    );
    if (seq !== this._seq) return; // a newer request superseded this one
    this.root.classList.remove("loading");
    this.loads += 1;
    this._draw(results, range);
  }

  _draw(results, range) {
    const scale = this.x === "time" ? 1 / 1000 : 1; // uPlot's time axis is in seconds
    const tables = [];
    let points = 0;
    let lo = Infinity;
    let hi = -Infinity;
    for (const res of results) {
      const xs = [];
      const mins = [];
      const maxs = [];
      const lasts = [];
      for (const b of res.buckets || []) {
        const x = num(b.x_max) * scale;
        xs.push(x);
        mins.push(this._y(b.min));
        maxs.push(this._y(b.max));
        lasts.push(this._y(b.last));
        points += Number(b.count) || 0;
      }
      if (xs.length) {
        lo = Math.min(lo, xs[0]);
        hi = Math.max(hi, xs[xs.length - 1]);
      }
      tables.push([xs, maxs, mins, lasts]);
    }
    const data = tables.length ? uPlot.join(tables) : [[]];
    this.root.dataset.points = String(points);
    this.root.dataset.loads = String(this.loads);
    this.root.dataset.start = range ? String(range.start) : "";
    this.root.dataset.end = range ? String(range.end) : "";
    this.root.dataset.drawnSeries = String(results.filter((r) => (r.buckets || []).length).length);
    this.status.textContent =
      `${points.toLocaleString()} points` + (range ? ` · ${this.x} ${range.start}–${range.end}` : "");
    const width = Math.max(200, this.canvas.clientWidth || 600);
    if (!this.plot) {
      this.plot = new uPlot(this._options(width), data, this.canvas);
    } else {
      this.plot.setData(data, true);
    }
    if (range) {
      this.plot.setScale("x", { min: range.start * scale, max: range.end * scale });
    } else if (Number.isFinite(lo) && lo === hi) {
      this.plot.setScale("x", { min: lo - 1, max: hi + 1 });
    }
  }

  _y(v) {
    const y = num(v);
    if (y == null) return null;
    return this.log && y <= 0 ? null : y;
  }

  _options(width) {
    const series = [{ label: this.x }];
    const bands = [];
    this.series.forEach((s, i) => {
      const base = 1 + 3 * i;
      const faint = `${s.color}40`;
      series.push(
        { label: `${s.runName} ${s.split} max`, stroke: faint, width: 0.5, spanGaps: true,
          points: { show: false } },
        { label: `${s.runName} ${s.split} min`, stroke: faint, width: 0.5, spanGaps: true,
          points: { show: false } },
        { label: `${s.runName} · ${splitLabel(s.split)}`, stroke: s.color, width: 1.5,
          dash: DASH[s.split] ?? [2, 2], spanGaps: true, points: { show: false } },
      );
      bands.push({ series: [base, base + 1], fill: `${s.color}22` });
    });
    return {
      width,
      height: 260,
      series,
      bands,
      legend: { show: false },
      scales: {
        x: { time: this.x === "time" },
        y: this.log ? { distr: 3, log: 10 } : {},
      },
      axes: [{}, { size: 60 }],
      cursor: {
        drag: { x: true, y: false, setScale: false },
        bind: {
          dblclick: () => () => {
            this.userZoom(null);
            return null;
          },
        },
      },
      hooks: {
        setSelect: [(u) => this._onSelect(u)],
        setCursor: [(u) => this._onCursor(u)],
      },
    };
  }

  _onSelect(u) {
    if (u.select.width < 3) return;
    const scale = this.x === "time" ? 1000 : 1;
    const a = u.posToVal(u.select.left, "x") * scale;
    const b = u.posToVal(u.select.left + u.select.width, "x") * scale;
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    const start = Math.floor(Math.min(a, b));
    const end = Math.ceil(Math.max(a, b));
    if (end > start) this.userZoom({ start, end });
  }

  _onCursor(u) {
    const idx = u.cursor.idx;
    this.legendValues.forEach((el, i) => {
      const v = idx == null ? null : u.data[3 + 3 * i]?.[idx];
      el.textContent = v == null ? "" : formatValue(v);
    });
  }

  _renderLegend() {
    this.legend.innerHTML = "";
    this.legendValues = [];
    for (const s of this.series) {
      const item = document.createElement("span");
      item.className = "legend-item";
      item.dataset.testid = "legend-item";
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = s.color;
      if ((DASH[s.split] ?? [2, 2]).length) sw.classList.add("dashed");
      const label = document.createElement("span");
      label.textContent = `${s.runName} · ${splitLabel(s.split)}`;
      const value = document.createElement("span");
      value.className = "legend-value";
      this.legendValues.push(value);
      item.append(sw, label, value);
      this.legend.append(item);
    }
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: Math.max(200, this.canvas.clientWidth), height: 260 });
  }

  destroy() {
    this._seq += 1;
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

export function formatValue(v) {
  if (v == null) return "";
  if (typeof v === "string") return v;
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(4);
  return v.toPrecision(5).replace(/\.?0+$/, "");
}

/**
 * The chart panel: x axis, split toggles and log scale, and one MetricChart per key.
 * `runs` are run details ({run_id, name, metrics: [{key, split}]}) with a `color`.
 */
export class ChartPanel {
  constructor(root, runs) {
    this.root = root;
    this.runs = runs;
    this.x = "step";
    this.log = false;
    this.hiddenSplits = new Set(["system"]);
    this.charts = new Map();
    root.innerHTML = "";
    root.classList.add("chart-panel");
    this.controls = document.createElement("div");
    this.controls.className = "chart-controls";
    this.grid = document.createElement("div");
    this.grid.className = "chart-grid";
    this.grid.dataset.testid = "charts";
    root.append(this.controls, this.grid);
    this._onResize = () => this.charts.forEach((c) => c.resize());
    window.addEventListener("resize", this._onResize);
  }

  splits() {
    const all = new Set();
    for (const r of this.runs) for (const m of r.metrics || []) all.add(m.split);
    return [...all].sort();
  }

  keys() {
    const keys = new Set();
    for (const r of this.runs) {
      for (const m of r.metrics || []) if (!this.hiddenSplits.has(m.split)) keys.add(m.key);
    }
    return [...keys].sort();
  }

  _renderControls() {
    const c = this.controls;
    c.innerHTML = "";
    const xSel = document.createElement("select");
    xSel.dataset.testid = "x-axis";
    for (const x of ["step", "time"]) {
      const o = document.createElement("option");
      o.value = x;
      o.textContent = `x: ${x}`;
      o.selected = x === this.x;
      xSel.append(o);
    }
    xSel.addEventListener("change", () => {
      this.x = xSel.value;
      this.rebuild();
    });
    c.append(xSel);
    for (const split of this.splits()) {
      const label = document.createElement("label");
      label.className = "toggle";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = !this.hiddenSplits.has(split);
      box.dataset.testid = `split-${split || "none"}`;
      box.addEventListener("change", () => {
        if (box.checked) this.hiddenSplits.delete(split);
        else this.hiddenSplits.add(split);
        this.rebuild();
      });
      label.append(box, ` ${splitLabel(split)}`);
      c.append(label);
    }
    const logLabel = document.createElement("label");
    logLabel.className = "toggle";
    const logBox = document.createElement("input");
    logBox.type = "checkbox";
    logBox.checked = this.log;
    logBox.dataset.testid = "log-scale";
    logBox.addEventListener("change", () => {
      this.log = logBox.checked;
      this.rebuild();
    });
    logLabel.append(logBox, " log scale");
    c.append(logLabel);
    const hint = document.createElement("span");
    hint.className = "muted";
    hint.textContent = "drag to zoom · double-click to reset";
    c.append(hint);
  }

  _seriesOf(key) {
    const out = [];
    for (const r of this.runs) {
      for (const m of r.metrics || []) {
        if (m.key === key && !this.hiddenSplits.has(m.split)) {
          out.push({ runId: r.run_id, runName: r.name || r.run_id, color: r.color, split: m.split });
        }
      }
    }
    return out;
  }

  /** Drop every chart and draw them again (axis, splits or log scale changed). */
  rebuild() {
    this._renderControls();
    this.charts.forEach((c) => c.destroy());
    this.charts.clear();
    this.grid.innerHTML = "";
    const keys = this.keys();
    if (!keys.length) {
      this.grid.textContent = "No metrics logged.";
      return Promise.resolve();
    }
    const loads = [];
    for (const key of keys) {
      const el = document.createElement("div");
      el.dataset.testid = "chart";
      this.grid.append(el);
      const chart = new MetricChart(el, {
        key, series: this._seriesOf(key), x: this.x, log: this.log,
        onZoom: (range) => this.zoomAll(range),
      });
      this.charts.set(key, chart);
      loads.push(chart.refresh());
    }
    return Promise.all(loads);
  }

  /** One x range for every chart of the panel (they share the axis). */
  zoomAll(range) {
    return Promise.all([...this.charts.values()].map((c) => c.zoom(range)));
  }

  /** New run details (live polling): add charts/series that appeared, refresh the rest. */
  update(runs) {
    const before = JSON.stringify(this.splits()) + JSON.stringify(this._shape());
    this.runs = runs;
    if (JSON.stringify(this.splits()) + JSON.stringify(this._shape()) !== before) {
      return this.rebuild();
    }
    // zoomed charts keep their range: the visible window does not move under the user
    return Promise.all([...this.charts.values()].filter((c) => !c.range).map((c) => c.refresh()));
  }

  _shape() {
    return this.keys().map((k) => [k, this._seriesOf(k).map((s) => `${s.runId}/${s.split}`)]);
  }

  destroy() {
    window.removeEventListener("resize", this._onResize);
    this.charts.forEach((c) => c.destroy());
    this.charts.clear();
  }
}
