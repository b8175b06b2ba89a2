// The design as a diagram: components as boxes in layers (a longest-path layering from the
// sources, the classic first step of Sugiyama's method), hand-offs (`to`, `routes`, load
// balancer `targets`) as solid arrows, synchronous `calls` dashed, cache misses dotted.
// Left to right on wide screens, top to bottom on narrow ones. Boxes are buttons: click or
// Enter selects the component.

const SVG = 'http://www.w3.org/2000/svg';
const BOX_W = 128;
const BOX_H = 46;
const LAYER_GAP = 64;
const ROW_GAP = 22;

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The arrows of a design: `{from, to, kind}` with kind `route`, `call` or `miss`. */
export function edgesOf(design) {
  const ids = new Set((design.components || []).map((c) => c.id));
  const edges = [];
  const add = (from, to, kind) => {
    if (typeof to === 'string' && ids.has(to)) edges.push({ from, to, kind });
  };
  for (const c of design.components || []) {
    add(c.id, c.to, 'route');
    for (const r of c.routes || []) add(c.id, r.to, 'route');
    for (const t of c.targets || []) add(c.id, t, 'route');
    for (const call of c.calls || []) add(c.id, call.to, 'call');
    add(c.id, c.miss_to, 'miss');
  }
  return edges;
}

/** Layer of each component: the longest path to it from a source, back edges left out. */
export function layers(components, edges) {
  const out = new Map(components.map((c) => [c.id, []]));
  for (const e of edges) out.get(e.from).push(e.to);
  const state = new Map();
  const order = [];
  const back = new Set();
  const visit = (id) => {
    state.set(id, 'open');
    for (const next of out.get(id)) {
      if (state.get(next) === 'open') back.add(`${id}->${next}`);
      else if (!state.has(next)) visit(next);
    }
    state.set(id, 'done');
    order.push(id);
  };
  const roots = components.filter((c) => c.kind === 'source').map((c) => c.id);
  for (const id of [...roots, ...components.map((c) => c.id)]) if (!state.has(id)) visit(id);
  const layer = new Map(components.map((c) => [c.id, 0]));
  for (const id of order.reverse()) {
    for (const next of out.get(id)) {
      if (!back.has(`${id}->${next}`)) layer.set(next, Math.max(layer.get(next), layer.get(id) + 1));
    }
  }
  return { layer, back };
}

function subtitle(c) {
  const n = c.instances ?? (c.kind === 'database' ? 1 + (c.replicas || 0) : undefined);
  if (c.kind === 'source') {
    if (c.users) return `source · ${c.users} users`;
    return `source · ${c.rate_per_s ?? 'schedule'}/s`;
  }
  return n ? `${c.kind} ×${n}` : c.kind;
}

/**
 * Draws `design` into `container` (replacing what was there).
 * @param onSelect  (id) when a box is chosen
 * @param selected  the id to highlight
 */
export function drawDiagram(container, design, { onSelect, selected } = {}) {
  const components = (design && design.components) || [];
  container.replaceChildren();
  if (!components.length) {
    container.textContent = 'No components to draw.';
    return;
  }
  const edges = edgesOf(design);
  const { layer, back } = layers(components, edges);
  const vertical = container.clientWidth > 0 && container.clientWidth < 560;
  const columns = new Map();
  for (const c of components) {
    const l = layer.get(c.id);
    if (!columns.has(l)) columns.set(l, []);
    columns.get(l).push(c);
  }
  const depth = Math.max(...columns.keys()) + 1;
  const breadth = Math.max(...[...columns.values()].map((col) => col.length));
  const step = vertical ? BOX_H + LAYER_GAP : BOX_W + LAYER_GAP;
  const across = vertical ? BOX_W + ROW_GAP : BOX_H + ROW_GAP;
  const pos = new Map();
  for (const [l, col] of columns) {
    // Centre each layer across the widest one.
    const offset = ((breadth - col.length) * across) / 2;
    col.forEach((c, i) => {
      const a = l * step + 8;
      const b = offset + i * across + 8;
      pos.set(c.id, vertical ? { x: b, y: a } : { x: a, y: b });
    });
  }
  // The last layer and the last row need no gap after them.
  const long = depth * step - LAYER_GAP + 16;
  const wide = breadth * across - ROW_GAP + 16;
  const w = vertical ? wide : long;
  const h = vertical ? long : wide;
  const svg = el('svg', {
    viewBox: `0 0 ${w} ${h}`,
    class: 'diagram-svg',
    role: 'group',
    'aria-label': `design diagram: ${components.length} components, ${edges.length} arrows`,
  });
  const defs = el('defs');
  const marker = el('marker', {
    id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
  });
  marker.append(el('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrow-head' }));
  defs.append(marker);
  svg.append(defs);

  const centre = (id) => {
    const p = pos.get(id);
    return { x: p.x + BOX_W / 2, y: p.y + BOX_H / 2 };
  };
  // Where the line from a box's centre towards (dx, dy) leaves the box.
  const border = (c, dx, dy) => {
    const sx = dx === 0 ? Infinity : BOX_W / 2 / Math.abs(dx);
    const sy = dy === 0 ? Infinity : BOX_H / 2 / Math.abs(dy);
    const s = Math.min(sx, sy);
    return { x: c.x + dx * s, y: c.y + dy * s };
  };
  for (const e of edges) {
    const a = centre(e.from);
    const b = centre(e.to);
    const dx = b.x - a.x;
    const dy = b.y - a.y;
    const start = border(a, dx, dy);
    const end = border(b, -dx, -dy);
    const isBack = back.has(`${e.from}->${e.to}`) || e.from === e.to;
    let d = `M ${start.x} ${start.y} L ${end.x} ${end.y}`;
    if (isBack) {
      // A loop back bends aside, so it does not run over the forward arrows.
      const bend = vertical ? { x: BOX_W, y: 0 } : { x: 0, y: BOX_H + ROW_GAP };
      d = `M ${start.x} ${start.y} Q ${(start.x + end.x) / 2 + bend.x} ${(start.y + end.y) / 2 + bend.y} ${end.x} ${end.y}`;
    }
    const path = el('path', { d, class: `edge edge-${e.kind}`, 'marker-end': 'url(#arrow)' });
    path.append(el('title', {}, `${e.from} → ${e.to} (${e.kind})`));
    svg.append(path);
  }
  for (const c of components) {
    const p = pos.get(c.id);
    const g = el('g', {
      class: `node node-${c.kind}${c.id === selected ? ' selected' : ''}`,
      transform: `translate(${p.x} ${p.y})`,
      tabindex: 0,
      role: 'button',
      'data-component': c.id,
      'aria-label': `${c.id}, ${subtitle(c)}`,
      'aria-pressed': c.id === selected ? 'true' : 'false',
    });
    g.append(el('rect', { width: BOX_W, height: BOX_H, rx: 6 }));
    g.append(el('text', { x: BOX_W / 2, y: 19, class: 'node-id' }, c.id));
    g.append(el('text', { x: BOX_W / 2, y: 36, class: 'node-kind' }, subtitle(c)));
    const choose = () => onSelect && onSelect(c.id);
    g.addEventListener('click', choose);
    g.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') {
        ev.preventDefault();
        choose();
      }
    });
    svg.append(g);
  }
  container.append(svg);
}
