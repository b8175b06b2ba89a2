// The console's wiring: three views (sign in, projects, one project) chosen by the URL's hash,
// and a project's run watched live over the WebSocket and changed while it runs.

import * as api from './api.js';
import { LiveChannel } from './ws.js';
import { TimeChart } from './charts.js';
import { drawDiagram } from './diagram.js';
import { DesignEditor } from './editor.js';
import {
  h, fmt, Timeline, renderReport, renderBottlenecks, renderComparison, describeChange,
} from './views.js';

const $ = (id) => document.getElementById(id);
const editor = new DesignEditor($('editor'));
const timeline = new Timeline($('timeline'));
const state = { templates: [], project: null, selected: null, run: null, charts: null };

function notice(text) {
  $('notice').textContent = text || '';
}

function fail(e) {
  notice(e && e.message ? e.message : String(e));
}

function show(view) {
  for (const v of ['auth', 'projects', 'project']) $(`view-${v}`).hidden = v !== view;
  const heading = document.querySelector(`#view-${view} h1`);
  if (heading) document.title = `${heading.textContent} · sdsim console`;
}

// ---- routing and session -------------------------------------------------------------------

async function route() {
  const s = api.current();
  $('who').textContent = s && s.user ? s.user.email : '';
  $('sign-out').hidden = !s;
  if (!s) {
    stopRun();
    state.project = null;
    show('auth');
    return;
  }
  const m = location.hash.match(/^#\/project\/(.+)$/);
  if (m) await openProject(decodeURIComponent(m[1]));
  else await showProjects();
}

window.addEventListener('hashchange', () => route().catch(fail));
api.onSession((s) => {
  if (!s) route().catch(fail);
});

$('auth-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('auth-message').textContent = '';
  try {
    await api.signIn($('email').value, $('password').value);
    $('password').value = '';
    notice('');
    await route();
  } catch (e) {
    $('auth-message').textContent = e.message;
  }
});

$('register').addEventListener('click', async () => {
  $('auth-message').textContent = '';
  if (!$('auth-form').reportValidity()) return;
  try {
    const r = await api.register($('email').value, $('password').value);
    $('auth-message').textContent = `Account created for ${r.user.email}: sign in to continue.`;
  } catch (e) {
    $('auth-message').textContent = e.message;
  }
});

$('sign-out').addEventListener('click', async () => {
  stopRun();
  await api.signOut();
  location.hash = '';
});

// ---- projects ------------------------------------------------------------------------------

async function showProjects() {
  stopRun();
  state.project = null;
  show('projects');
  if (!state.templates.length) {
    state.templates = (await api.templates()).templates;
    $('template').replaceChildren(...state.templates.map((t) => h('option', { value: t.id }, t.name)));
    describeTemplate();
  }
  const { projects } = await api.projects();
  $('project-list').replaceChildren(...(projects.length
    ? projects.map((p) => h('li', {},
      h('a', { href: `#/project/${encodeURIComponent(p.id)}` }, p.name),
      h('span', { class: 'hint' }, ` ${p.template_id || 'own design'} · v${p.version} · ${p.role}`)))
    : [h('li', { class: 'hint' }, 'No projects yet: create one from a template.')]));
}

function describeTemplate() {
  const t = state.templates.find((x) => x.id === $('template').value);
  $('template-description').textContent = t ? t.description : '';
}

$('template').addEventListener('change', describeTemplate);

$('create-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('create-message').textContent = '';
  try {
    const p = await api.createProject($('project-name').value, $('template').value);
    location.hash = `#/project/${encodeURIComponent(p.id)}`;
  } catch (e) {
    $('create-message').textContent = e.message;
  }
});

// ---- one project: diagram, editor ----------------------------------------------------------

async function openProject(id) {
  show('project');
  if (state.project && state.project.id === id) return;
  stopRun();
  const p = await api.project(id);
  state.project = p;
  $('project-title').textContent = p.name;
  document.title = `${p.name} · sdsim console`;
  editor.set(p.design);
  const comps = p.design.components || [];
  state.selected = (comps.find((c) => c.kind !== 'source') || comps[0] || {}).id || null;
  designChanged();
  resetRunPanel();
  const history = await loadRuns();
  const live = history.find((r) => r.status === 'running' || r.status === 'queued');
  if (live) watch(live.simulation_id, live.websocket_channel);
}

function designChanged() {
  const design = state.project.design;
  const comps = design.components || [];
  $('component').replaceChildren(...comps.map((c) =>
    h('option', { value: c.id, selected: c.id === state.selected }, `${c.id} (${c.kind})`)));
  selectComponent(state.selected);
}

function selectComponent(id) {
  state.selected = id;
  const design = state.project.design;
  const c = (design.components || []).find((x) => x.id === id) || {};
  $('component').value = id || '';
  $('instances').value = c.instances ?? 1;
  $('rate').value = c.users ?? c.rate_per_s ?? '';
  $('set-rate').disabled = c.kind !== 'source';
  $('set-instances').disabled = c.kind === 'source';
  $('inject-crash').disabled = c.kind === 'source';
  drawDiagram($('diagram'), design, { selected: id, onSelect: selectComponent });
}

$('component').addEventListener('change', () => selectComponent($('component').value));
window.addEventListener('resize', () => {
  if (state.project) drawDiagram($('diagram'), state.project.design, { selected: state.selected, onSelect: selectComponent });
});

function parsedDesign() {
  try {
    return editor.normalise();
  } catch (e) {
    editor.showProblems([{ path: '$', message: `not JSON: ${e.message}` }]);
    return null;
  }
}

$('validate').addEventListener('click', async () => {
  const design = parsedDesign();
  if (!design) return;
  try {
    const v = await api.validate(design);
    editor.showProblems(v.problems || [], v.valid ? 'The design is valid.' : undefined);
  } catch (e) {
    editor.showProblems(e.problems || [], e.problems && e.problems.length ? undefined : e.message);
  }
});

$('save').addEventListener('click', async () => {
  const design = parsedDesign();
  if (!design) return;
  try {
    const p = await api.saveDesign(state.project.id, design, state.project.version);
    state.project = p;
    editor.showProblems([], `Saved as version ${p.version}.`);
    designChanged();
  } catch (e) {
    if (e.problems && e.problems.length) editor.showProblems(e.problems);
    else editor.showProblems([], e.status === 409 ? `${e.message} Reload the project to see the change.` : e.message);
  }
});

// ---- runs ----------------------------------------------------------------------------------

function resetRunPanel() {
  if (state.charts) Object.values(state.charts).forEach((c) => c.destroy());
  state.charts = {
    throughput: new TimeChart($('chart-throughput'), { title: 'Throughput', unit: 'completed /s', labels: ['throughput'] }),
    latency: new TimeChart($('chart-latency'), { title: 'Latency: p50, p99 and mean since warm-up; interval mean', unit: 'ms', labels: ['p50', 'p99', 'mean since warm-up', 'interval mean'] }),
    utilisation: new TimeChart($('chart-utilisation'), { title: 'Utilisation', unit: '%', labels: [] }),
    queue: new TimeChart($('chart-queue'), { title: 'Queue length', unit: 'waiting', labels: [] }),
  };
  timeline.clear();
  setProgress(0);
  $('run-status').textContent = '';
  $('whatif-message').textContent = '';
  setLive(false);
}

function setProgress(fraction) {
  const pct = Math.floor(Math.max(0, Math.min(1, fraction)) * 100);
  $('progress-bar').value = pct;
  $('progress-text').textContent = `${pct}%`;
}

function setLive(live) {
  for (const id of ['set-instances', 'set-rate', 'inject-crash', 'clear-faults']) {
    $(id).toggleAttribute('data-idle', !live);
  }
  $('run').disabled = live;
}

$('run-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try {
    const r = await api.startRun(state.project.id, Number($('duration').value), Number($('speed').value));
    resetRunPanel();
    watch(r.simulation_id, r.websocket_channel);
    loadRuns().catch(() => {});
  } catch (e) {
    $('run-status').textContent = e.message;
  }
});

function watch(id, channel) {
  stopRun();
  const run = { id, ended: false, last: null };
  state.run = run;
  for (const f of state.project.design.faults || []) {
    const target = f.component || (f.from ? `${f.from}→${f.to}` : '');
    timeline.add({ t_s: f.at_s, component: target, event: `planned: ${f.action}${f.duration_s ? ` for ${f.duration_s} s` : ''}` }, 'plan');
  }
  $('run-status').textContent = `run ${id.slice(0, 8)}: waiting for the first point…`;
  setLive(true);
  run.channel = new LiveChannel({
    channel: channel || `simulation:data:${id}`,
    token: api.accessToken,
    onEvent: (data) => onPoint(run, data),
    onStatus: (text) => {
      if (!run.ended) $('run-status').textContent = `run ${id.slice(0, 8)}: ${text}`;
    },
  }).start();
  // A failed run publishes no final point; its status says so.
  run.poll = setInterval(async () => {
    let s;
    try {
      s = await api.run(id);
    } catch {
      return; // The next poll tries again; the live channel carries on meanwhile.
    }
    if (run.ended) return;
    if (s.status === 'failed') finish(run, `failed: ${s.error || 'no reason given'}`).catch(fail);
    else if (s.status === 'completed' || s.status === 'stopped') finish(run, s.status).catch(fail);
  }, 2000);
}

function stopRun() {
  const run = state.run;
  if (!run) return;
  run.ended = true;
  clearInterval(run.poll);
  if (run.channel) run.channel.stop();
  state.run = null;
  setLive(false);
}

// Each point carries the timeline entries since the previous one (what-if changes among them,
// so its `changes` list would only repeat them).
function timelineEntries(data) {
  return [...(data.timeline || []), ...((data.metrics || {}).timeline || [])];
}

function onPoint(run, data) {
  if (run.ended || !data || !data.metrics) return;
  const m = data.metrics;
  const t = m.t_s ?? data.sim_time_s;
  setProgress(data.progress);
  $('run-status').textContent = `run ${run.id.slice(0, 8)}: ${fmt(data.sim_time_s)} simulated s, ${fmt(data.events, 0)} events`;
  const last = run.last;
  const values = {};
  // Figures are cumulative since the warm-up; a drop means the warm-up ended and they restarted.
  if (last && t > last.t && m.completed >= last.completed) {
    const done = m.completed - last.completed;
    values.throughput = done / (t - last.t);
    if (done > 0) values['interval mean'] = (m.mean_ms * m.completed - last.mean * last.completed) / done;
  }
  if (m.completed > 0) {
    values['mean since warm-up'] = m.mean_ms;
    // Points of runners older than the percentiles carry none.
    if (m.p50_ms !== undefined) values.p50 = m.p50_ms;
    if (m.p99_ms !== undefined) values.p99 = m.p99_ms;
  }
  run.last = { t, completed: m.completed, mean: m.mean_ms };
  const c = state.charts;
  c.throughput.push(t, values);
  c.latency.push(t, values);
  perComponent(c.utilisation, t, m.utilization || {}, 100);
  perComponent(c.queue, t, m.mean_queue_length || {}, 1);
  for (const e of timelineEntries(data)) timeline.add(e, 'run');
  if (data.type === 'completed' || data.type === 'stopped') finish(run, data.type).catch(fail);
}

function perComponent(chart, t, byComponent, scale) {
  const ids = Object.keys(byComponent);
  if (ids.some((id) => !chart.labels.includes(id))) chart.setLabels([...new Set([...chart.labels, ...ids])]);
  const values = {};
  for (const id of ids) values[id] = byComponent[id] * scale;
  chart.push(t, values);
}

async function finish(run, how) {
  if (run.ended) return;
  run.ended = true;
  clearInterval(run.poll);
  run.channel.stop();
  setLive(false);
  if (how === 'completed') setProgress(1);
  $('run-status').textContent = `run ${run.id.slice(0, 8)}: ${how}`;
  loadRuns().catch(() => {});
  if (how === 'completed' || how === 'stopped') await showResults(run.id);
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The run's report and analysis; waits while the server is still storing them. */
async function showResults(id) {
  $('report').replaceChildren(h('h3', {}, 'Report'), h('p', {}, 'Loading…'));
  // The final point can arrive before the run's end is stored; results are a 409 until then.
  for (let attempt = 0; attempt < 60; attempt++) {
    const s = await api.run(id);
    if (s.status !== 'queued' && s.status !== 'running') break;
    await pause(250);
  }
  for (let attempt = 0; attempt < 60; attempt++) {
    let r;
    try {
      r = await api.results(id);
    } catch (e) {
      if (e.status !== 409) throw e;
      await pause(500);
      continue;
    }
    renderReport($('report'), r.report);
    renderBottlenecks($('bottlenecks'), r.analysis);
    // The report's timeline holds the what-if changes too (its `changes` repeat them).
    for (const e of (r.report && r.report.timeline) || []) timeline.add(e, 'run');
    // With a reports queue (Redis), the analysis arrives after the report.
    if (r.analysis !== null && r.analysis !== undefined) return r;
    await pause(1000);
  }
  return null;
}

// ---- what-if -------------------------------------------------------------------------------

async function sendChange(change) {
  const say = (text) => {
    $('whatif-message').textContent = text;
  };
  const run = state.run;
  if (!run || run.ended) {
    say('Start a run first: changes apply to a running simulation.');
    return;
  }
  try {
    const r = await api.whatIf(run.id, [change]);
    for (const c of r.accepted || [change]) {
      timeline.add({ t_s: r.simulated_s, component: c.component, event: describeChange(c) }, 'sent');
    }
    say(`Accepted at ${fmt(r.simulated_s)} simulated s.`);
  } catch (e) {
    if (e.status === 404 || e.status === 405) say(`what-if not available on this server (${e.status}: ${e.message}).`);
    else if (e.status === 409) say(`The run is no longer running: ${e.message}`);
    else say(e.message);
  }
}

$('set-instances').addEventListener('click', () => sendChange({
  op: 'set', component: state.selected, field: 'instances', value: Number($('instances').value),
}));
$('set-rate').addEventListener('click', () => {
  const c = state.project.design.components.find((x) => x.id === state.selected) || {};
  const field = c.users !== undefined ? 'users' : 'rate_per_s';
  sendChange({ op: 'set', component: state.selected, field, value: Number($('rate').value) });
});
$('inject-crash').addEventListener('click', () => sendChange({
  op: 'fault', action: 'crash', component: state.selected, instances: 1,
}));
$('clear-faults').addEventListener('click', () => sendChange({ op: 'clear', component: state.selected }));

// ---- history and comparison ----------------------------------------------------------------

async function loadRuns() {
  if (!state.project) return [];
  const { simulations } = await api.runs(state.project.id);
  const finished = (r) => r.status === 'completed' || r.status === 'stopped';
  $('run-list').replaceChildren(...simulations.map((r) => {
    const open = h('button', { type: 'button', class: 'link', disabled: !finished(r) }, 'report');
    open.addEventListener('click', () => {
      timeline.clear();
      showResults(r.simulation_id).catch(fail);
    });
    return h('li', {},
      h('label', {},
        h('input', { type: 'checkbox', value: r.simulation_id, disabled: !finished(r) }),
        ` ${r.simulation_id.slice(0, 8)} · ${r.status} · ${fmt(r.duration_s, 0)} s · ${new Date(r.created_at).toLocaleTimeString()}`),
      ' ', open);
  }));
  updateCompare();
  return simulations;
}

function ticked() {
  return [...$('run-list').querySelectorAll('input[type=checkbox]:checked')].map((i) => i.value);
}

function updateCompare() {
  $('compare').disabled = ticked().length !== 2;
}

$('run-list').addEventListener('change', updateCompare);
$('compare').addEventListener('click', async () => {
  try {
    const runs = await Promise.all(ticked().map((id) => api.results(id)));
    renderComparison($('comparison'), runs);
  } catch (e) {
    $('comparison').replaceChildren(h('p', { class: 'error' }, e.message));
  }
});

route().catch(fail);
