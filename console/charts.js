// Line and bar charts on uPlot (vendor/uplot, MIT; loaded as the global `uPlot` before the
// modules run). Each chart's element carries `data-points`, the number of x values with at
// least one value drawn, so tests and people can tell that points arrived.

const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];

export const color = (i) => PALETTE[i % PALETTE.length];

function width(el) {
  return Math.max(240, Math.floor(el.clientWidth || el.parentElement.clientWidth || 320));
}

/**
 * A chart of series over simulated time, growing point by point.
 * @param el      the element to draw in (its `data-points` is kept up to date)
 * @param title   shown above the plot
 * @param unit    the y axis label
 * @param labels  the series names
 */
export class TimeChart {
  constructor(el, { title, unit, labels }) {
    this.el = el;
    this.title = title;
    this.unit = unit;
    this.data = [[]];
    this.labels = [];
    this.plot = null;
    this.setLabels(labels);
    this.resize = () => this.plot && this.plot.setSize({ width: width(this.el), height: 200 });
    window.addEventListener('resize', this.resize);
  }

  /** Replaces the series (e.g. once the components are known); keeps the x values. */
  setLabels(labels) {
    this.labels = labels;
    const xs = this.data[0];
    this.data = [xs, ...labels.map(() => xs.map(() => null))];
    this.draw();
  }

  draw() {
    if (this.plot) this.plot.destroy();
    this.el.replaceChildren();
    const opts = {
      title: this.title,
      width: width(this.el),
      height: 200,
      scales: { x: { time: false } },
      // Three significant digits: queue lengths can be thousandths.
      axes: [{ label: 'simulated s' }, { label: this.unit, size: 60, values: (_, ticks) => ticks.map((t) => +t.toPrecision(3)) }],
      series: [{ label: 't (s)' }, ...this.labels.map((label, i) => ({
        label,
        stroke: color(i),
        width: 2,
        spanGaps: false,
      }))],
    };
    this.plot = new uPlot(opts, this.data, this.el);
    this.count();
  }

  count() {
    const valued = this.data[0].filter((_, i) => this.data.slice(1).some((ys) => ys[i] !== null));
    this.el.dataset.points = String(valued.length);
  }

  /** Adds the values at `x`, one per series label (missing ones are gaps). */
  push(x, valuesByLabel) {
    this.data[0].push(x);
    this.labels.forEach((label, i) => {
      const v = valuesByLabel[label];
      this.data[i + 1].push(Number.isFinite(v) ? v : null);
    });
    this.plot.setData(this.data);
    this.count();
  }

  destroy() {
    window.removeEventListener('resize', this.resize);
    if (this.plot) this.plot.destroy();
  }
}

/**
 * Bars per category (e.g. p99 per component), one colour per series (e.g. per run): category c
 * takes the x slots c·(n+1) … c·(n+1)+n−1, one per series, and a free slot before the next.
 */
export function barChart(el, { title, unit, categories, series }) {
  el.replaceChildren();
  const n = series.length;
  const stride = n + 1;
  const xs = [];
  categories.forEach((_, c) => {
    for (let r = 0; r < stride; r++) xs.push(c * stride + r);
  });
  const columns = series.map((s, r) =>
    xs.map((x) => (x % stride === r ? s.values[Math.floor(x / stride)] ?? null : null)),
  );
  const centre = (c) => c * stride + (n - 1) / 2;
  const opts = {
    title,
    width: width(el),
    height: 220,
    scales: { x: { time: false, range: [-1, xs.length] } },
    axes: [
      {
        splits: () => categories.map((_, c) => centre(c)),
        values: (_, ticks) => ticks.map((t) => categories[Math.round((t - (n - 1) / 2) / stride)] ?? ''),
      },
      { label: unit },
    ],
    series: [
      { label: 'slot', value: (_, x) => (x == null ? '' : categories[Math.floor(x / stride)] ?? '') },
      ...series.map((s, r) => ({
        label: s.label,
        fill: color(r),
        stroke: color(r),
        paths: uPlot.paths.bars({ size: [0.9, 80] }),
        points: { show: false },
      })),
    ],
  };
  const plot = new uPlot(opts, [xs, ...columns], el);
  el.dataset.points = String(categories.length);
  return plot;
}
