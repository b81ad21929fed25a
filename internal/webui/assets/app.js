// Sluice web UI: plain JavaScript over the REST API of the process that
// serves it (the dispatcher: every job; a job's master: its job). No
// framework, no build step: the DOM is made with h() and svg() below,
// never from HTML strings, so no value from the API is ever parsed as HTML.
'use strict';

const MODE = document.querySelector('meta[name="sluice-mode"]').content; // dispatcher | master
// How often the pages poll: every 2 s, or ?poll=MS in the page's address
// (at least 250).
const POLL_MS = Math.max(250, Number(new URLSearchParams(location.search).get('poll')) || 2000);
const TOKEN_KEY = 'sluice-token';
// The jobs list reads the masters of at most this many running jobs per
// poll (three small GETs each); the rest show their state only.
const DETAIL_LIMIT = 50;

// ---- DOM helpers ----------------------------------------------------------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}

const SVGNS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else if (k === 'width%') el.style.width = v + '%';
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === undefined || k === null || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}

function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }

// ---- formatting -----------------------------------------------------------

function fmtNum(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(2) + ' G';
  if (a >= 1e6) return (n / 1e6).toFixed(2) + ' M';
  if (a >= 1e4) return (n / 1e3).toFixed(1) + ' k';
  if (a >= 100 || Number.isInteger(n)) return String(Math.round(n));
  return n.toFixed(1);
}

function fmtRate(n) { return n === null || n === undefined ? '–' : fmtNum(n) + '/s'; }

function fmtBytes(b) {
  if (b === null || b === undefined) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return (i === 0 ? String(b) : b.toFixed(1)) + ' ' + u[i];
}

function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '–';
  if (ms === 0) return '0 ms';
  if (ms < 1) return ms.toFixed(2) + ' ms';
  if (ms < 1000) return ms.toFixed(ms < 10 ? 1 : 0) + ' ms';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + ' s';
  const m = Math.floor(s / 60);
  if (m < 60) return m + ' min ' + Math.floor(s % 60) + ' s';
  const hr = Math.floor(m / 60);
  if (hr < 48) return hr + ' h ' + (m % 60) + ' min';
  if (hr > 24 * 365) return '> 1 year';
  return Math.floor(hr / 24) + ' d ' + (hr % 24) + ' h';
}

function ageOf(ts) {
  if (!ts) return null;
  const t = Date.parse(ts);
  if (Number.isNaN(t) || t <= 0) return null;
  return Math.max(0, Date.now() - t);
}

// completedAge is how long ago checkpoint c completed (its trigger plus
// its duration); never below 0, whatever the clocks say.
function completedAge(c) { return Math.max(0, (ageOf(c.triggered) ?? 0) - (c.durationMs || 0)); }

function fmtTime(ts) {
  const t = Date.parse(ts);
  return Number.isNaN(t) ? '–' : new Date(t).toLocaleTimeString();
}

function baseName(p) { return String(p).replace(/\/+$/, '').split('/').pop(); }

// ---- rates from successive polls ---------------------------------------------

const samples = new Map(); // key → [{t, v}], oldest first, over the last RATE_WINDOW_MS
const RATE_WINDOW_MS = 5000;

// rate is a counter's per-second change over the last few seconds of polls
// (the browser's clock times the answers, so one short interval alone is
// noisy); null at the first poll. A counter that goes back (a new master)
// starts over.
function rate(key, v) {
  const now = performance.now();
  let s = samples.get(key) || [];
  if (s.length && v < s[s.length - 1].v) s = [];
  s.push({t: now, v});
  while (s.length > 2 && now - s[1].t >= RATE_WINDOW_MS) s.shift();
  samples.set(key, s);
  const first = s[0];
  if (s.length < 2 || now - first.t < 200) return null;
  return (v - first.v) * 1000 / (now - first.t);
}

// ---- the API ----------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

let askingToken = false;
let tokenDeclined = false; // asked and cancelled: wait for the Token button

async function api(method, path, body) {
  const headers = {Accept: 'application/json'};
  const tok = token();
  if (tok) headers.Authorization = 'Bearer ' + tok;
  let resp;
  try {
    resp = await fetch(path, {method, headers, body, cache: 'no-store'});
  } catch (e) {
    setLive(false);
    return {status: 0, ok: false, data: null, error: 'cannot reach the server: ' + e.message};
  }
  setLive(true);
  const text = await resp.text();
  let data = null;
  try { data = JSON.parse(text); } catch (e) { /* metrics, or a plain error */ }
  const error = resp.ok ? '' : (data && data.error) || text.trim() || resp.statusText;
  if (resp.status === 401 && MODE === 'dispatcher' && !askingToken && !tokenDeclined) askToken(tok ? 'The token was refused.' : 'The dispatcher wants its bearer token.');
  return {status: resp.status, ok: resp.ok, data, error};
}

const enc = encodeURIComponent;

// masterPath is where a job's master route p (e.g. "v1/vertices") is read.
function masterPath(id, p) { return MODE === 'dispatcher' ? `/v1/jobs/${enc(id)}/master/${p}` : `/${p}`; }
function progressPath(id) { return MODE === 'dispatcher' ? `/v1/jobs/${enc(id)}/progress` : '/v1/progress'; }

function setLive(ok) {
  const el = document.getElementById('live');
  el.textContent = ok ? 'live' : 'offline';
  el.classList.toggle('off', !ok);
}

// ---- modal, toast, token ------------------------------------------------------

// dialog shows a modal; resolves true on OK, false on Cancel or Escape.
function dialog(title, body, okText, danger) {
  const back = document.getElementById('modal');
  document.getElementById('modal-title').textContent = title;
  append(clear(document.getElementById('modal-body')), [body]);
  const ok = document.getElementById('modal-ok');
  const cancel = document.getElementById('modal-cancel');
  ok.textContent = okText || 'OK';
  ok.classList.toggle('danger', !!danger);
  back.hidden = false;
  const first = back.querySelector('input') || ok;
  first.focus();
  return new Promise(resolve => {
    const done = v => {
      back.hidden = true;
      ok.onclick = cancel.onclick = back.onkeydown = null;
      resolve(v);
    };
    ok.onclick = () => done(true);
    cancel.onclick = () => done(false);
    back.onkeydown = e => {
      if (e.key === 'Escape') done(false);
      if (e.key === 'Enter' && e.target.tagName === 'INPUT') done(true);
    };
  });
}

let toastTimer;
function toast(msg, kind) {
  const el = document.getElementById('toast');
  el.textContent = msg;
  el.className = 'toast ' + (kind || '');
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, kind === 'error' ? 12000 : 6000);
}

async function askToken(why) {
  askingToken = true;
  const input = h('input', {id: 'token-input', type: 'password', autocomplete: 'off', placeholder: 'bearer token', value: token()});
  const ok = await dialog('Dispatcher token', [h('p', {text: why + ' It is kept in this tab only (sessionStorage) and sent as "Authorization: Bearer".'}), input], 'Use token');
  askingToken = false;
  tokenDeclined = !ok;
  if (ok) {
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    route();
  }
}

// ---- polling ------------------------------------------------------------------

let current = null; // {refresh, gen}
let gen = 0;
let timer = null;

// show makes refresh the page's poll: now and every POLL_MS; a refresh of
// a page left behind changes nothing (its gen is old).
function show(refresh) {
  const g = ++gen;
  current = {refresh, gen: g};
  clearTimeout(timer);
  const tick = async () => {
    if (g !== gen) return;
    try { await refresh(() => g === gen); } catch (e) { console.error(e); }
    if (g === gen) timer = setTimeout(tick, POLL_MS);
  };
  tick();
}

// ---- shared bits ----------------------------------------------------------------

const main = document.getElementById('main');

function badge(state) {
  const s = String(state || 'unknown');
  return h('span', {class: 'badge st-' + s.toLowerCase(), text: s});
}

function notAvailable(what, r) {
  if (r.status === 404) return h('p', {class: 'na', text: `${what}: not available (this server has no such route yet).`});
  if (r.status === 409) return h('p', {class: 'na', text: `${what}: the job has no running master.`});
  return h('p', {class: 'na error', text: `${what}: ${r.error || 'HTTP ' + r.status}`});
}

function card(title, ...kids) { return h('section', {class: 'card'}, title ? h('h2', {text: title}) : null, kids); }

function stat(label, value, id) {
  return h('div', {class: 'stat'}, h('div', {class: 'stat-value', id, text: value}), h('div', {class: 'stat-label', text: label}));
}

function table(cls, headers, rows) {
  return h('table', {class: cls},
    h('thead', {}, h('tr', {}, headers.map(x => h('th', {text: x})))),
    h('tbody', {}, rows));
}

function setNav(active) {
  const nav = clear(document.getElementById('nav'));
  if (MODE === 'dispatcher') {
    nav.append(h('a', {href: '#/jobs', class: active === 'jobs' ? 'active' : ''}, 'Jobs'));
    nav.append(h('a', {href: '#/submit', id: 'nav-submit', class: active === 'submit' ? 'active' : ''}, 'Submit'));
  } else {
    nav.append(h('a', {href: '#/job/_/graph', class: 'active'}, 'Job'));
  }
}

// ---- jobs list (dispatcher) -----------------------------------------------------

function jobsView() {
  setNav('jobs');
  const body = h('tbody', {id: 'jobs-body'});
  const summary = h('p', {class: 'muted', id: 'jobs-summary'}, 'loading…');
  append(clear(main), [
    h('div', {class: 'page-head'}, h('h1', {text: 'Jobs'}), h('a', {class: 'button', href: '#/submit'}, 'Submit a job')),
    card(null, summary,
      h('table', {class: 'grid', id: 'jobs-table'},
        h('thead', {}, h('tr', {}, ['Job', 'State', 'Uptime', 'Records in', 'Records out', 'Last checkpoint', 'Restarts'].map(x => h('th', {text: x})))),
        body)),
  ]);
  show(async alive => {
    const r = await api('GET', '/v1/jobs');
    if (!alive()) return;
    if (!r.ok) { clear(summary).append(notAvailable('Jobs', r)); return; }
    const jobs = r.data.jobs || [];
    jobs.sort((a, b) => (b.submitted || '').localeCompare(a.submitted || ''));
    const live = jobs.filter(j => ['RUNNING', 'FAILING'].includes(j.state)).slice(0, DETAIL_LIMIT);
    const details = new Map(await Promise.all(live.map(async j => [j.id, await jobDetail(j.id)])));
    if (!alive()) return;
    const counts = {};
    for (const j of jobs) counts[j.state] = (counts[j.state] || 0) + 1;
    clear(summary).append(jobs.length ? `${jobs.length} jobs: ` + Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(', ') : 'No jobs yet. Submit one.');
    clear(body);
    for (const j of jobs) {
      const d = details.get(j.id) || {};
      body.append(h('tr', {class: 'job-row', 'data-id': j.id, 'data-state': j.state, onclick: () => { location.hash = `#/job/${j.id}/graph`; }},
        h('td', {}, h('a', {href: `#/job/${j.id}/graph`, class: 'job-name', text: j.name}), h('div', {class: 'muted mono', text: j.id})),
        h('td', {}, badge(j.state)),
        h('td', {text: d.since ? fmtMs(ageOf(d.since)) : '–'}),
        h('td', {class: 'num rate-in', text: fmtRate(d.in)}),
        h('td', {class: 'num rate-out', text: fmtRate(d.out)}),
        h('td', {text: d.checkpointAge !== undefined && d.checkpointAge !== null ? fmtMs(d.checkpointAge) + ' ago' : '–'}),
        h('td', {class: 'num', text: d.restarts ?? '–'})));
    }
  });
}

// jobDetail reads a running job's master: since, rates, checkpoint age, restarts.
async function jobDetail(id) {
  const [st, vs, cp] = await Promise.all([
    api('GET', masterPath(id, 'v1/status')),
    api('GET', masterPath(id, 'v1/vertices')),
    api('GET', masterPath(id, 'v1/checkpoints?limit=1')),
  ]);
  const d = {};
  if (st.ok) { d.since = st.data.since; d.restarts = st.data.restarts; }
  if (vs.ok) {
    const {inRows, outRows} = jobRows(vs.data.vertices || []);
    d.in = rate(`job:${id}:in`, inRows);
    d.out = rate(`job:${id}:out`, outRows);
  }
  if (cp.ok && cp.data.latest) {
    const l = cp.data.latest;
    d.checkpointAge = completedAge(l);
  }
  return d;
}

// jobRows: records in are what the sources emitted, records out what the
// sinks (vertices no other vertex reads) took in.
function jobRows(vertices) {
  const read = new Set();
  for (const v of vertices) for (const e of v.inputs || []) read.add(e.from);
  let inRows = 0, outRows = 0;
  for (const v of vertices) {
    if (v.source) inRows += v.rowsOut;
    if (!read.has(v.id) && !v.source) outRows += v.rowsIn;
  }
  return {inRows, outRows};
}

// ---- submit (dispatcher) ----------------------------------------------------------

function submitView() {
  setNav('submit');
  const spec = h('textarea', {id: 'spec', spellcheck: 'false', rows: 22, placeholder: 'Paste a job spec (JSON or YAML, docs/job-spec.md), or upload a file.'});
  const err = h('div', {id: 'spec-error', class: 'inline-error', role: 'alert', hidden: true});
  const file = h('input', {id: 'spec-file', type: 'file', accept: '.json,.yaml,.yml,application/json,text/yaml'});
  const sp = h('input', {id: 'savepoint', type: 'text', placeholder: 'optional: a savepoint to start from (file:///…/savepoint-…)'});
  const btn = h('button', {id: 'submit-button', type: 'submit'}, 'Submit');
  file.addEventListener('change', async () => {
    if (file.files.length) { spec.value = await file.files[0].text(); err.hidden = true; spec.classList.remove('invalid'); }
  });
  spec.addEventListener('input', () => { err.hidden = true; spec.classList.remove('invalid'); });
  const form = h('form', {id: 'submit-form', class: 'card', onsubmit: async e => {
    e.preventDefault();
    btn.disabled = true;
    btn.textContent = 'Submitting…';
    const q = sp.value.trim() ? '?savepoint=' + enc(sp.value.trim()) : '';
    const r = await api('POST', '/v1/jobs' + q, spec.value);
    btn.disabled = false;
    btn.textContent = 'Submit';
    if (r.ok) {
      toast(`Job ${r.data.name} submitted: ${r.data.id}`, 'ok');
      location.hash = `#/job/${r.data.id}/graph`;
      return;
    }
    err.textContent = r.error || `HTTP ${r.status}`;
    err.hidden = false;
    spec.classList.add('invalid');
  }},
    h('label', {for: 'spec', text: 'Job spec'}), spec, err,
    h('div', {class: 'form-row'}, h('label', {for: 'spec-file', text: 'or upload'}), file),
    h('div', {class: 'form-row'}, h('label', {for: 'savepoint', text: 'Restore'}), sp),
    h('div', {class: 'form-row'}, btn, h('span', {class: 'muted', text: 'The dispatcher validates the spec as its master would: errors show here and nothing is started.'})));
  append(clear(main), [h('div', {class: 'page-head'}, h('h1', {text: 'Submit a job'})), form]);
  show(async () => {}); // nothing to poll; stops the last page's poll
}

// ---- a job's pages ------------------------------------------------------------------

const TABS = [['graph', 'Graph'], ['checkpoints', 'Checkpoints'], ['taskmanagers', 'TaskManagers'], ['kafka', 'Kafka lag']];

function jobView(id, tab) {
  setNav('job');
  if (!TABS.some(([t]) => t === tab)) tab = 'graph';
  const title = h('h1', {id: 'job-title', text: MODE === 'dispatcher' ? id : 'Job'});
  const state = h('span', {id: 'job-state'});
  const meta = h('div', {class: 'muted', id: 'job-meta'});
  const actions = h('div', {class: 'actions'},
    h('button', {id: 'act-savepoint', type: 'button', onclick: () => act(id, 'savepoint')}, 'Savepoint'),
    MODE === 'dispatcher' ? h('button', {id: 'act-rescale', type: 'button', onclick: () => act(id, 'rescale')}, 'Rescale') : null,
    h('button', {id: 'act-skip', type: 'button', onclick: () => act(id, 'skip')}, 'Skip backlog'),
    h('button', {id: 'act-cancel', type: 'button', class: 'danger', onclick: () => act(id, 'cancel')}, 'Cancel'));
  const tabs = h('nav', {class: 'tabs'}, TABS.map(([t, label]) =>
    h('a', {href: `#/job/${id}/${t}`, id: 'tab-' + t, class: t === tab ? 'active' : ''}, label)));
  const progress = h('div', {id: 'progress'});
  const content = h('div', {id: 'tab-content'});
  append(clear(main), [
    h('div', {class: 'page-head'}, h('div', {}, h('div', {class: 'title-row'}, title, state), meta), actions),
    progress, tabs, content]);
  const views = {graph: graphTab, checkpoints: checkpointsTab, taskmanagers: taskManagersTab, kafka: kafkaTab};
  const tabRefresh = views[tab](id, content);
  show(async alive => {
    await Promise.all([jobHead(id, title, state, meta, alive), progressPanel(id, progress, alive), tabRefresh(alive)]);
  });
}

async function jobHead(id, title, state, meta, alive) {
  if (MODE === 'dispatcher') {
    const r = await api('GET', `/v1/jobs/${enc(id)}`);
    if (!alive()) return;
    if (!r.ok) { clear(meta).append(r.error || ''); return; }
    const j = r.data;
    title.textContent = j.name;
    clear(state).append(badge(j.state));
    const bits = [`id ${j.id}`, `run ${j.run}`, `restarts ${j.restarts}`];
    if (j.parallelism) bits.push(`parallelism ${j.parallelism}`);
    if (j.master) bits.push(`master ${j.master.process || ''}`);
    if (j.reason) bits.push(j.reason);
    clear(meta).append(bits.join(' · '));
    if (j.lastSavepoint) meta.append(' · last savepoint ', h('span', {class: 'mono', title: j.lastSavepoint, text: baseName(j.lastSavepoint)}));
    const active = ['RUNNING', 'FAILING', 'STARTING', 'PENDING'].includes(j.state);
    for (const b of document.querySelectorAll('.actions button')) if (!busy) b.disabled = !active;
  } else {
    const r = await api('GET', '/v1/status');
    if (!alive()) return;
    if (!r.ok) { clear(meta).append(r.error || ''); return; }
    title.textContent = r.data.job;
    clear(state).append(badge(String(r.data.state).toUpperCase()));
    clear(meta).append(`attempt ${r.data.attempt || '–'} · since ${fmtTime(r.data.since)} · restarts ${r.data.restarts} · checkpoints ${r.data.checkpoints}`);
  }
}

// ---- actions ---------------------------------------------------------------------------

let busy = false;

const ACTIONS = {
  savepoint: {
    title: 'Write a savepoint', ok: 'Write savepoint', running: 'Writing a savepoint…',
    body: () => h('p', {text: 'The job writes a savepoint of its state and goes on running.'}),
    request: id => MODE === 'dispatcher' ? ['POST', `/v1/jobs/${enc(id)}/savepoints`] : ['POST', '/v1/savepoint'],
    done: d => `Savepoint written: ${d.path}`,
  },
  rescale: {
    title: 'Rescale the job', ok: 'Rescale', running: 'Rescaling (stop with a savepoint, restart)…',
    body: () => [h('p', {text: 'The job stops with a savepoint and starts again from it with the new parallelism.'}),
      h('label', {for: 'rescale-parallelism', text: 'Parallelism '}), h('input', {id: 'rescale-parallelism', type: 'number', min: 1, value: 2})],
    request: id => ['POST', `/v1/jobs/${enc(id)}/rescale`, JSON.stringify({parallelism: Number(document.getElementById('rescale-parallelism').value)})],
    done: d => `Rescaled to ${d.parallelism}: run ${d.run}, ${d.state}`,
  },
  skip: {
    title: 'Skip the backlog', ok: 'Skip backlog', danger: true, running: 'Skipping the backlog…',
    body: () => h('p', {text: 'Every source that can (Kafka) jumps to its newest data: the records in between are never processed.'}),
    request: id => MODE === 'dispatcher' ? ['POST', `/v1/jobs/${enc(id)}/skip-backlog`] : ['POST', '/v1/skip-backlog'],
    done: d => `Skipped: ${(d.skipped || []).join(', ') || 'nothing'}`,
  },
  cancel: {
    title: 'Cancel the job', ok: 'Cancel job', danger: true, running: 'Cancelling…',
    body: () => [h('p', {text: 'The job stops. With a savepoint first, it can be started again from it.'}),
      h('label', {class: 'check'}, h('input', {id: 'cancel-savepoint', type: 'checkbox'}), ' with a savepoint first')],
    request: id => {
      const sp = document.getElementById('cancel-savepoint').checked ? '?savepoint=true' : '';
      return MODE === 'dispatcher' ? ['DELETE', `/v1/jobs/${enc(id)}${sp}`] : ['POST', `/v1/cancel${sp}`];
    },
    done: d => `Cancelled${d.savepoint || d.path ? ' after savepoint ' + (d.savepoint || d.path) : ''}${d.state ? ': ' + d.state : ''}`,
  },
};

async function act(id, kind) {
  const a = ACTIONS[kind];
  if (busy || !(await dialog(a.title, a.body(), a.ok, a.danger))) return;
  const [method, path, body] = a.request(id);
  busy = true;
  const buttons = document.querySelectorAll('.actions button');
  buttons.forEach(b => { b.disabled = true; });
  toast(a.running, 'info');
  const r = await api(method, path, body);
  busy = false;
  buttons.forEach(b => { b.disabled = false; });
  if (r.ok) toast(a.done(r.data || {}), 'ok');
  else toast(`${a.title} failed: ${r.error || 'HTTP ' + r.status}`, 'error');
  if (current) current.refresh(() => true);
}

// ---- progress of long operations ----------------------------------------------------

async function progressPanel(id, el, alive) {
  const r = await api('GET', progressPath(id));
  if (!alive()) return;
  clear(el);
  if (r.status === 404) { el.append(h('p', {class: 'na small', id: 'progress-na', text: 'Progress of long operations: not available.'})); return; }
  if (!r.ok) return;
  const ops = (r.data.operations || []).filter(o => o.state === 'running' || ageOf(o.startedAt) < 60000);
  if (!ops.length) return;
  el.append(card('Operations', ops.map(o => {
    const frac = o.bytesTotal ? o.bytesDone / o.bytesTotal : (o.filesTotal ? o.filesDone / o.filesTotal : (o.state === 'done' ? 1 : 0));
    const pct = Math.min(100, Math.round(frac * 100));
    const text = [`${o.kind} ${o.id}`, o.phase ? `${o.state} (${o.phase})` : o.state,
      o.bytesTotal ? `${fmtBytes(o.bytesDone)} of ${fmtBytes(o.bytesTotal)}` : '',
      o.filesTotal ? `${o.filesDone}/${o.filesTotal} files` : '',
      o.state === 'running' && o.etaMs > 0 ? `about ${fmtMs(o.etaMs)} left` : '',
      o.error || ''].filter(Boolean).join(' · ');
    const subs = (o.subtasks || []).slice(0, 12).map(x =>
      h('span', {class: 'chip', text: `${x.vertex}#${x.subtask} ${x.bytesTotal ? Math.round(100 * x.bytesDone / x.bytesTotal) + ' %' : (x.filesTotal ? x.filesDone + '/' + x.filesTotal + ' files' : '')}`}));
    return h('div', {class: 'op op-' + o.state},
      h('div', {class: 'op-text', text}),
      h('div', {class: 'bar'}, h('div', {class: 'bar-fill', 'width%': pct})),
      subs.length ? h('div', {class: 'op-subtasks'}, subs) : null);
  })));
}

// ---- graph tab ----------------------------------------------------------------------------

const BOX_W = 220, BOX_H = 112, COL_GAP = 90, ROW_GAP = 28, PAD = 24;

function graphTab(id, content) {
  const holder = h('div', {class: 'graph-holder', id: 'graph'});
  const details = h('div', {id: 'vertex-details'});
  const legend = h('div', {class: 'legend muted'},
    h('span', {class: 'sw ok'}), 'back-pressured < 10 %', h('span', {class: 'sw warn'}), '< 50 %', h('span', {class: 'sw bad'}), '≥ 50 % of the time (over the last poll)');
  append(content, [card('Job graph', legend, holder), details]);
  let selected = null;
  return async alive => {
    const r = await api('GET', masterPath(id, 'v1/vertices'));
    if (!alive()) return;
    if (!r.ok) { clear(holder).append(notAvailable('Vertices', r)); return; }
    const vs = r.data.vertices || [];
    const stats = new Map();
    for (const v of vs) {
      const now = performance.now();
      const bpKey = `bp:${id}:${v.id}`;
      const bpRate = rate(bpKey, v.backPressuredMs); // ms per s, summed over subtasks
      stats.set(v.id, {
        in: rate(`v:${id}:${v.id}:in`, v.source ? v.rowsOut : v.rowsIn),
        out: rate(`v:${id}:${v.id}:out`, v.rowsOut),
        bp: bpRate === null ? null : Math.min(1, bpRate / 1000 / Math.max(1, v.parallelism)),
        t: now,
      });
    }
    drawGraph(holder, vs, stats, selected, v => {
      selected = v.id;
      for (const g of holder.querySelectorAll('g.vertex')) g.classList.toggle('selected', g.dataset.id === selected);
      showVertex(details, vs.find(x => x.id === selected));
    });
    if (selected) showVertex(details, vs.find(x => x.id === selected));
  };
}

// levels places each vertex at 1 + the deepest of its inputs.
function levels(vs) {
  const byId = new Map(vs.map(v => [v.id, v]));
  const level = new Map();
  const visit = (v, depth) => {
    if (level.has(v.id)) return level.get(v.id);
    if (depth > vs.length) return 0; // a cycle: not from this API, but never loop
    let l = 0;
    for (const e of v.inputs || []) {
      const u = byId.get(e.from);
      if (u) l = Math.max(l, visit(u, depth + 1) + 1);
    }
    level.set(v.id, l);
    return l;
  };
  vs.forEach(v => visit(v, 0));
  return level;
}

function bpClass(bp) { return bp === null || bp === undefined ? 'ok' : bp < 0.1 ? 'ok' : bp < 0.5 ? 'warn' : 'bad'; }

function drawGraph(holder, vs, stats, selected, onSelect) {
  const level = levels(vs);
  const cols = [];
  for (const v of vs) (cols[level.get(v.id)] ||= []).push(v);
  const rows = Math.max(1, ...cols.map(c => (c || []).length));
  const height = PAD * 2 + rows * BOX_H + (rows - 1) * ROW_GAP;
  const width = PAD * 2 + cols.length * BOX_W + Math.max(0, cols.length - 1) * COL_GAP;
  const pos = new Map();
  cols.forEach((col, c) => {
    const colH = col.length * BOX_H + (col.length - 1) * ROW_GAP;
    col.forEach((v, i) => pos.set(v.id, {x: PAD + c * (BOX_W + COL_GAP), y: (height - colH) / 2 + i * (BOX_H + ROW_GAP)}));
  });
  const root = svg('svg', {class: 'graph', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'job graph'},
    svg('defs', {}, svg('marker', {id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 8, markerHeight: 8, orient: 'auto-start-reverse'},
      svg('path', {d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrow-head'}))));
  for (const v of vs) {
    for (const e of v.inputs || []) {
      const a = pos.get(e.from), b = pos.get(v.id);
      if (!a || !b) continue;
      const x1 = a.x + BOX_W, y1 = a.y + BOX_H / 2, x2 = b.x - 2, y2 = b.y + BOX_H / 2;
      const mx = (x1 + x2) / 2;
      root.append(svg('path', {class: 'edge', 'data-from': e.from, 'data-to': v.id, d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`, 'marker-end': 'url(#arrow)'}));
      root.append(svg('text', {class: 'edge-label', x: mx, y: (y1 + y2) / 2 - 6, 'text-anchor': 'middle'}, e.partition + (e.output ? ` (${e.output})` : '')));
    }
  }
  for (const v of vs) {
    const p = pos.get(v.id), s = stats.get(v.id) || {};
    const cls = bpClass(s.bp);
    const lines = [
      `${v.type} · parallelism ${v.parallelism}`,
      `in ${fmtRate(s.in)} · out ${fmtRate(s.out)}`,
      `back-pressure ${s.bp === null || s.bp === undefined ? '–' : Math.round(s.bp * 100) + ' %'}`,
      `watermark lag ${v.watermarkLagMs === undefined || v.watermarkLagMs === null ? '–' : fmtMs(v.watermarkLagMs)}`,
    ];
    root.append(svg('g', {class: `vertex bp-${cls} state-${v.state}${v.id === selected ? ' selected' : ''}`, 'data-id': v.id, transform: `translate(${p.x} ${p.y})`, onclick: () => onSelect(v)},
      svg('title', {}, `${v.id}: rows in ${v.rowsIn}, out ${v.rowsOut}; back-pressured ${v.backPressuredMs} ms in all`),
      svg('rect', {class: 'box', width: BOX_W, height: BOX_H, rx: 8}),
      svg('rect', {class: 'box-head', width: BOX_W, height: 26, rx: 8}),
      svg('rect', {class: 'box-head', y: 14, width: BOX_W, height: 12}),
      svg('text', {class: 'vertex-id', x: 12, y: 18}, v.id + (v.source ? '  (source)' : '')),
      lines.map((t, i) => svg('text', {class: 'vertex-line' + (i === 1 ? ' vertex-rate' : ''), x: 12, y: 44 + i * 18}, t))));
  }
  clear(holder).append(root);
}

function showVertex(el, v) {
  clear(el);
  if (!v) return;
  el.append(card(`Vertex ${v.id}: subtasks`, table('grid', ['Subtask', 'TaskManager', 'Rows in', 'Rows out', 'Back-pressured'],
    (v.subtasks || []).map(s => h('tr', {},
      h('td', {text: s.subtask}), h('td', {class: 'mono', text: s.taskManager || '–'}),
      h('td', {class: 'num', text: fmtNum(s.rowsIn)}), h('td', {class: 'num', text: fmtNum(s.rowsOut)}),
      h('td', {class: 'num', text: fmtMs(s.backPressuredMs)}))))));
}

// ---- checkpoints tab ------------------------------------------------------------------------

const HISTORY_ROWS = 12;

function checkpointsTab(id, content) {
  const stats = h('div', {class: 'stats', id: 'checkpoint-stats'});
  const chart = h('div', {id: 'checkpoint-chart', class: 'charts'});
  const list = h('div', {id: 'checkpoint-list'});
  append(content, [card('Checkpoints', stats), card('Over time (oldest left)', chart), card(`History (the last ${HISTORY_ROWS}, newest first)`, list)]);
  return async alive => {
    const r = await api('GET', masterPath(id, 'v1/checkpoints'));
    if (!alive()) return;
    if (!r.ok) { clear(stats).append(notAvailable('Checkpoints', r)); return; }
    const c = r.data;
    const l = c.latest;
    append(clear(stats), [stat('completed', fmtNum(c.completed), 'cp-completed'), stat('savepoints', fmtNum(c.savepoints), 'cp-savepoints'),
      stat('failed', fmtNum(c.failed)), stat('restarts', fmtNum(c.restarts)),
      stat('last checkpoint', l ? fmtMs(completedAge(l)) + ' ago' : '–'),
      stat('last duration', l ? fmtMs(l.durationMs) : '–'), stat('last size', l ? fmtBytes(l.bytes) : '–')]);
    const hist = (c.history || []).slice().reverse();
    append(clear(chart), [
      barChart('Duration and alignment', hist, x => x.durationMs, x => x.alignmentMs, fmtMs),
      barChart('Size', hist, x => x.bytes, null, fmtBytes)]);
    clear(list).append(table('grid', ['Id', 'Kind', 'State', 'Triggered', 'Duration', 'Alignment', 'Size', 'Path or error'],
      (c.history || []).slice(0, HISTORY_ROWS).map(x => h('tr', {class: 'cp-' + x.state},
        h('td', {class: 'num', text: x.id}), h('td', {text: x.savepoint ? 'savepoint' : 'checkpoint'}),
        h('td', {}, badge(x.state)), h('td', {text: fmtTime(x.triggered)}),
        h('td', {class: 'num', text: fmtMs(x.durationMs)}), h('td', {class: 'num', text: fmtMs(x.alignmentMs)}),
        h('td', {class: 'num', text: fmtBytes(x.bytes)}), x.error ? h('td', {class: 'wrap error-text', text: x.error}) : h('td', {class: 'mono', title: x.path || '', text: baseName(x.path || '')})))));
  };
}

// barChart draws one bar per checkpoint (failed red, savepoints purple),
// with an optional second value (alignment) as an inner bar.
function barChart(title, items, value, inner, fmt) {
  const W = 520, H = 180, L = 64, B = 22, T = 10;
  const max = Math.max(1e-9, ...items.map(value));
  const bw = items.length ? Math.min(24, (W - L - 8) / items.length) : 0;
  const root = svg('svg', {class: 'chart', width: W, height: H + B + T, viewBox: `0 0 ${W} ${H + B + T}`});
  for (let i = 0; i <= 4; i++) {
    const y = T + H - H * i / 4;
    root.append(svg('line', {class: 'gridline', x1: L, x2: W, y1: y, y2: y}));
    root.append(svg('text', {class: 'axis', x: L - 6, y: y + 4, 'text-anchor': 'end'}, fmt(max * i / 4)));
  }
  items.forEach((x, i) => {
    const v = value(x), bh = H * v / max, bx = L + 4 + i * bw;
    const kind = x.state !== 'completed' ? 'failed' : x.savepoint ? 'savepoint' : 'checkpoint';
    const minH = kind === 'failed' ? 3 : 0; // a failed one wrote nothing: still show it
    root.append(svg('rect', {class: 'bar-' + kind, x: bx, y: T + H - Math.max(minH, bh), width: Math.max(1, bw - 2), height: Math.max(minH, bh)},
      svg('title', {}, `#${x.id} ${kind}: ${fmt(v)}${inner ? ', alignment ' + fmt(inner(x)) : ''}`)));
    if (inner) {
      const ih = H * Math.min(inner(x) || 0, v) / max;
      if (ih > 0) root.append(svg('rect', {class: 'bar-inner', x: bx, y: T + H - ih, width: Math.max(1, bw - 2), height: ih}));
    }
  });
  if (items.length) {
    root.append(svg('text', {class: 'axis', x: L + 4, y: T + H + 16}, '#' + items[0].id));
    root.append(svg('text', {class: 'axis', x: L + 4 + items.length * bw, y: T + H + 16, 'text-anchor': 'end'}, '#' + items[items.length - 1].id));
  }
  const key = [h('span', {class: 'sw cp'}), 'checkpoint', h('span', {class: 'sw sp'}), 'savepoint', h('span', {class: 'sw bad'}), 'failed'];
  if (inner) key.push(h('span', {class: 'sw inner'}), 'alignment');
  return h('div', {class: 'chart-box'}, h('h3', {text: title}), root, h('div', {class: 'legend muted'}, key));
}

// ---- TaskManagers tab --------------------------------------------------------------------------

function taskManagersTab(id, content) {
  const stats = h('div', {class: 'stats'});
  const list = h('div', {id: 'tm-list'});
  append(content, [card('TaskManagers', stats, list)]);
  return async alive => {
    const r = await api('GET', masterPath(id, 'v1/taskmanagers'));
    if (!alive()) return;
    if (!r.ok) { clear(list).append(notAvailable('TaskManagers', r)); return; }
    const t = r.data;
    const tms = t.taskManagers || [];
    const slots = tms.reduce((a, x) => a + x.slots, 0);
    const used = tms.reduce((a, x) => a + (x.tasks && x.tasks.length ? 1 : 0), 0);
    append(clear(stats), [stat('mode', t.mode), stat('registered', t.registered), stat('lost', t.lost), stat('slots', slots), stat('busy TaskManagers', used)]);
    if (t.mode === 'embedded') { clear(list).append(h('p', {class: 'muted', text: 'The job runs in its master\'s process: no TaskManagers.'})); return; }
    clear(list).append(table('grid', ['TaskManager', 'Resource (Mesos task)', 'Agent host', 'Data address', 'Slots', 'Tasks', 'Heartbeat RTT', 'Last heard'],
      tms.map(x => h('tr', {class: 'tm-row'},
        h('td', {class: 'mono', text: x.id}), h('td', {class: 'mono', text: x.resourceId}), h('td', {text: x.host || '–'}),
        h('td', {class: 'mono', text: x.dataAddress || '–'}), h('td', {class: 'num', text: x.slots}),
        h('td', {}, (x.tasks || []).map(s => h('span', {class: 'chip', text: s}))),
        h('td', {class: 'num', text: fmtMs(x.heartbeatRttMs)}), h('td', {text: x.lastHeard ? fmtMs(ageOf(x.lastHeard)) + ' ago' : '–'})))));
  };
}

// ---- Kafka lag tab ---------------------------------------------------------------------------------

function kafkaTab(id, content) {
  const stats = h('div', {class: 'stats'});
  const list = h('div', {id: 'kafka-list'});
  append(content, [card('Kafka lag per source partition', stats, list)]);
  return async alive => {
    const r = await api('GET', masterPath(id, 'v1/kafka-lag'));
    if (!alive()) return;
    if (!r.ok) { clear(stats); clear(list).append(notAvailable('Kafka lag', r)); return; }
    const ps = r.data.partitions || [];
    if (!ps.length) { clear(stats); clear(list).append(h('p', {class: 'muted', id: 'kafka-none', text: 'The job has no Kafka source.'})); return; }
    const total = ps.reduce((a, p) => a + p.lag, 0);
    const max = Math.max(1, ...ps.map(p => p.lag));
    append(clear(stats), [stat('total lag (records)', fmtNum(total)), stat('partitions', ps.length), stat('largest lag', fmtNum(max))]);
    clear(list).append(table('grid', ['Vertex', 'Subtask', 'Topic', 'Partition', 'Offset', 'High watermark', 'Lag', ''],
      ps.map(p => h('tr', {},
        h('td', {text: p.vertex}), h('td', {class: 'num', text: p.subtask}), h('td', {text: p.topic}), h('td', {class: 'num', text: p.partition}),
        h('td', {class: 'num', text: String(p.offset)}), h('td', {class: 'num', text: String(p.highWatermark)}), h('td', {class: 'num', text: fmtNum(p.lag)}),
        h('td', {class: 'lag-cell'}, h('div', {class: 'bar'}, h('div', {class: 'bar-fill lag', 'width%': Math.round(100 * p.lag / max)})))))));
  };
}

// ---- routing ----------------------------------------------------------------------------------------

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  if (MODE === 'master') {
    jobView('_', parts[0] === 'job' ? parts[2] : 'graph');
    return;
  }
  if (parts[0] === 'submit') submitView();
  else if (parts[0] === 'job' && parts[1]) jobView(parts[1], parts[2] || 'graph');
  else jobsView();
}

document.getElementById('token-button').hidden = MODE !== 'dispatcher';
document.getElementById('token-button').addEventListener('click', () => askToken('Set the dispatcher\'s bearer token.'));
window.addEventListener('hashchange', route);
route();
