// The design's JSON editor: a textarea with a line gutter, where the server's validation
// problems (`{path: "$.components[1].routes[0].p", message}`) are marked on the line of the
// field they name and listed below it. The text is laid out by `pretty`, which records the line
// of every path as it writes, so a path finds its line without a JSON parser that keeps
// positions.

import { h } from './views.js';

/** `value` as JSON indented by two spaces, and the line (0-based) where each path starts. */
export function pretty(value) {
  const lines = new Map();
  let line = 0;
  const write = (v, path, indent) => {
    if (!lines.has(path)) lines.set(path, line);
    if (Array.isArray(v)) {
      if (!v.length) return '[]';
      const pad = '  '.repeat(indent + 1);
      const parts = v.map((item, i) => {
        line += 1;
        return pad + write(item, `${path}[${i}]`, indent + 1);
      });
      line += 1;
      return `[\n${parts.join(',\n')}\n${'  '.repeat(indent)}]`;
    }
    if (v && typeof v === 'object') {
      const keys = Object.keys(v);
      if (!keys.length) return '{}';
      const pad = '  '.repeat(indent + 1);
      const parts = keys.map((k) => {
        line += 1;
        const child = `${path}.${k}`;
        lines.set(child, line);
        return `${pad}${JSON.stringify(k)}: ${write(v[k], child, indent + 1)}`;
      });
      line += 1;
      return `{\n${parts.join(',\n')}\n${'  '.repeat(indent)}}`;
    }
    return JSON.stringify(v);
  };
  const text = write(value, '$', 0);
  return { text, lines };
}

/** The line of `path`, or of the nearest enclosing path that exists (a missing field). */
export function lineOf(lines, path) {
  let p = path;
  while (p) {
    if (lines.has(p)) return lines.get(p);
    const cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
    if (cut <= 0) break;
    p = p.slice(0, cut);
  }
  return 0;
}

export class DesignEditor {
  /** @param root  an element holding `.gutter`, `textarea` and `.problems` */
  constructor(root) {
    this.textarea = root.querySelector('textarea');
    this.gutter = root.querySelector('.gutter');
    this.problemList = root.querySelector('.problems');
    this.lines = new Map();
    this.marks = new Map();
    this.textarea.addEventListener('input', () => this.renderGutter());
    this.textarea.addEventListener('scroll', () => {
      this.gutter.scrollTop = this.textarea.scrollTop;
    });
  }

  set(design) {
    const { text, lines } = pretty(design);
    this.textarea.value = text;
    this.lines = lines;
    this.textarea.scrollTop = 0;
    this.textarea.scrollLeft = 0;
    this.showProblems([]);
  }

  /** The parsed design, or throws a SyntaxError saying where the JSON is broken. */
  get() {
    return JSON.parse(this.textarea.value);
  }

  /** Lays the current text out again (so paths map to lines) and returns the design. */
  normalise() {
    const design = this.get();
    const { text, lines } = pretty(design);
    this.textarea.value = text;
    this.lines = lines;
    this.textarea.scrollLeft = 0;
    return design;
  }

  showProblems(problems, note) {
    this.marks = new Map();
    const items = problems.map((p) => {
      const line = lineOf(this.lines, p.path || '$');
      if (!this.marks.has(line)) this.marks.set(line, []);
      this.marks.get(line).push(`${p.path}: ${p.message}`);
      const jump = h('button', { type: 'button', class: 'link' }, `line ${line + 1}`);
      jump.addEventListener('click', () => this.focusLine(line));
      return h('li', {}, h('code', {}, p.path || '$'), ' ', p.message, ' (', jump, ')');
    });
    const heading = problems.length
      ? h('p', { class: 'error', role: 'alert' }, `${problems.length} problem(s) in the design`)
      : note
        ? h('p', { class: 'ok', role: 'status' }, note)
        : '';
    this.problemList.replaceChildren(heading, problems.length ? h('ul', {}, ...items) : '');
    this.renderGutter();
  }

  renderGutter() {
    const count = this.textarea.value.split('\n').length;
    const rows = [];
    for (let i = 0; i < count; i++) {
      const mark = this.marks.get(i);
      rows.push(mark
        ? h('div', { class: 'mark', title: mark.join('\n') }, `⚠ ${i + 1}`)
        : h('div', {}, String(i + 1)));
    }
    this.gutter.replaceChildren(...rows);
    this.gutter.scrollTop = this.textarea.scrollTop;
  }

  focusLine(line) {
    const text = this.textarea.value;
    let start = 0;
    for (let i = 0; i < line; i++) start = text.indexOf('\n', start) + 1;
    const end = text.indexOf('\n', start);
    this.textarea.focus();
    this.textarea.setSelectionRange(start, end < 0 ? text.length : end);
    const lineHeight = this.textarea.scrollHeight / Math.max(1, text.split('\n').length);
    this.textarea.scrollTop = Math.max(0, line * lineHeight - 40);
  }
}
