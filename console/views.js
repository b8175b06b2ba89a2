// Rendering of what the server returns: the report's key figures, the bottleneck analysis, the
// run's timeline and the comparison of two runs. Everything from the server goes in as text
// (textContent), never as markup.

import { barChart } from './charts.js';

/** A DOM element: `h('p', {class: 'x'}, 'text', child, …)`; `on*` attributes become listeners. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === '') continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

export function fmt(v, digits = 1) {
  if (v === undefined || v === null || Number.isNaN(v)) return '–';
  if (typeof v !== 'number') return String(v);
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en');
  return v.toFixed(digits);
}

const pct = (v) => (typeof v === 'number' ? `${(v * 100).toFixed(1)} %` : '–');

function table(caption, head, rows) {
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, ...head.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, ...rows.map((r) => h('tr', {}, ...r.map((c, i) =>
        i === 0 ? h('th', { scope: 'row' }, c) : h('td', {}, c))))),
    ));
}

/** The figures a person reads first, from a report's `end_to_end`. */
export function keyFigures(report) {
  const e = (report && report.end_to_end) || {};
  return [
    ['throughput', `${fmt(e.throughput_per_s)} /s`],
    ['completed', fmt(e.completed, 0)],
    ['dropped', fmt(e.dropped, 0)],
    ['errors', fmt(e.errors, 0)],
    ['mean', `${fmt(e.mean_ms)} ms`],
    ['p50', `${fmt(e.p50_ms)} ms`],
    ['p95', `${fmt(e.p95_ms)} ms`],
    ['p99', `${fmt(e.p99_ms)} ms`],
  ];
}

export function renderReport(root, report) {
  if (!report) {
    root.replaceChildren(h('p', {}, 'No report for this run.'));
    return;
  }
  const figures = h('dl', { class: 'figures' },
    ...keyFigures(report).map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));
  const comps = Object.entries(report.components || {});
  const perComponent = table('Per component (simulated ms)',
    ['component', 'throughput /s', 'utilisation', 'queue', 'p50', 'p99', 'dropped'],
    comps.map(([id, c]) => [id, fmt(c.throughput_per_s), pct(c.utilization),
      fmt(c.mean_queue_length, 2), fmt(c.p50_ms), fmt(c.p99_ms), fmt(c.dropped, 0)]));
  const slos = (report.slos || []).length
    ? table('Objectives', ['name', 'target', 'actual', 'met'],
      report.slos.map((s) => [s.name, fmt(s.target, 2), fmt(s.actual, 2), s.met ? 'yes' : 'NO']))
    : '';
  root.replaceChildren(h('h3', {}, 'Report'), figures, perComponent, slos);
}

export function renderBottlenecks(root, analysis) {
  if (analysis === null || analysis === undefined) {
    root.replaceChildren(h('h3', {}, 'Bottlenecks'), h('p', {}, 'The analysis is still being computed…'));
    return;
  }
  const findings = Array.isArray(analysis) ? analysis : [];
  const items = findings.map((f) => {
    const r = f.recommendation;
    const rec = r
      ? h('p', { class: 'recommendation' },
        `Recommendation: ${r.instances_now} → ${r.instances} instance(s) for ${pct(r.target_utilization)} utilisation `
        + `(offered load ${fmt(r.offered_load, 2)} Erlangs, predicted wait ${fmt(r.predicted_wait_ms)} ms`
        + (r.confirmed_utilization != null
          ? `; confirmed by a re-run: ${pct(r.confirmed_utilization)}, wait ${fmt(r.confirmed_wait_ms)} ms)`
          : ')'))
      : '';
    return h('li', { class: `finding status-${f.status}` },
      h('strong', {}, f.component), ' ', h('span', { class: 'badge' }, f.status),
      ` utilisation ${pct(f.utilization)}, queue ${fmt(f.mean_queue_length, 2)}, dropped ${pct(f.drop_rate)}`,
      h('p', {}, f.explanation), rec);
  });
  const worst = findings.filter((f) => f.status !== 'ok');
  root.replaceChildren(h('h3', {}, 'Bottlenecks'),
    h('p', {}, worst.length ? `${worst.length} component(s) need attention.` : 'No component is saturated or busy.'),
    h('ul', { class: 'findings' }, ...items));
}

/** The run's timeline: entries `{t_s, component, event}`, each shown once, in time order. */
export class Timeline {
  constructor(root) {
    this.root = root;
    this.entries = new Map();
  }

  clear() {
    this.entries.clear();
    this.render();
  }

  /** `source`: `run` (the server's timeline), `plan` (the design's faults), `sent` (a what-if the server accepted). */
  add(entry, source) {
    const key = `${source}|${Number(entry.t_s).toFixed(3)}|${entry.component}|${entry.event}`;
    if (this.entries.has(key)) return;
    this.entries.set(key, { ...entry, source });
    this.render();
  }

  render() {
    const sorted = [...this.entries.values()].sort((a, b) => a.t_s - b.t_s);
    if (!sorted.length) {
      this.root.replaceChildren(h('li', { class: 'empty' }, 'Nothing yet: faults, breaker openings, scaling and what-if changes appear here.'));
      return;
    }
    this.root.replaceChildren(...sorted.map((e) => h('li', { 'data-source': e.source, class: `tl-${e.source}` },
      h('span', { class: 'tl-time' }, `${fmt(e.t_s)} s`), ' ',
      h('span', { class: 'tl-comp' }, e.component || ''), ' ',
      h('span', { class: 'tl-event' }, e.source === 'sent' ? `sent — ${e.event}` : e.event))));
  }
}

/** Words for a what-if change, as the timeline shows a change it sent. */
export function describeChange(c) {
  if (c.op === 'set') return `what-if: ${c.field} → ${typeof c.value === 'object' ? JSON.stringify(c.value) : c.value}`;
  if (c.op === 'fault' && c.action === 'crash') return `what-if: crash ${c.instances ?? 1} instance(s)`;
  if (c.op === 'fault') return `what-if: ${c.action}`;
  if (c.op === 'clear') return 'what-if: cleared faults';
  return `what-if: ${JSON.stringify(c)}`;
}

/** Two finished runs side by side: key figures, then p99 per component as bars. */
export function renderComparison(root, runs) {
  const [a, b] = runs;
  const label = (r) => `${r.simulation.simulation_id.slice(0, 8)} (${new Date(r.simulation.created_at).toLocaleTimeString()})`;
  const fa = keyFigures(a.report);
  const fb = keyFigures(b.report);
  const rows = fa.map(([k, v], i) => [k, v, fb[i][1]]);
  // Sources have no latency of their own.
  const served = (r) => Object.entries(r.report.components || {}).filter(([, c]) => c.kind !== 'source').map(([id]) => id);
  const categories = [...new Set([...served(a), ...served(b)])];
  const p99 = (r) => categories.map((c) => (r.report.components[c] || {}).p99_ms ?? null);
  const chart = h('div', { class: 'chart', 'data-testid': 'chart-compare-p99' });
  root.replaceChildren(h('h3', {}, 'Comparison'),
    table('Key figures', ['', label(a), label(b)], rows), chart);
  barChart(chart, {
    title: 'p99 per component',
    unit: 'ms',
    categories,
    series: [{ label: label(a), values: p99(a) }, { label: label(b), values: p99(b) }],
  });
}
