// The Observability tab: built-in dashboards, the PromQL explorer, logs (search and live
// tail), traces (search, list, waterfall, span details) and, in the full stack, Grafana.

import { h, mount, api, withToken, fmtValue, fmtTime, seriesName, tabs } from './ui.js';
import { liveChart, Chart, refreshVisible } from './chart.js';

let traceView = null; // set by the traces panel: opens a trace by id
let selectSub = null;

/** Shows trace `id` in the Traces sub-tab (from a log line, an exemplar or a link). */
export function openTrace(id) {
  if (selectSub) selectSub('traces');
  if (traceView) traceView(id);
}

export function observabilityTab(ctx) {
  const panels = {
    dash: h('div', {}, dashboards(ctx)),
    explore: h('div', {}, explorer()),
    logs: h('div', {}, logsPanel(ctx)),
    traces: h('div', {}, tracesPanel()),
  };
  const items = [['dash', 'Dashboards'], ['explore', 'Explore (PromQL)'], ['logs', 'Logs'], ['traces', 'Traces']];
  if (ctx.lab.grafana_url) {
    items.push(['grafana', 'Grafana']);
    panels.grafana = h('div', {}, h('iframe', { class: 'grafana', title: 'Grafana dashboards', src: ctx.lab.grafana_url, loading: 'lazy' }),
      h('p', { class: 'small' }, h('a', { href: ctx.lab.grafana_url, target: '_blank', rel: 'noopener' }, 'Open Grafana in its own tab ↗')));
  }
  const show = (key) => {
    for (const [k, p] of Object.entries(panels)) p.hidden = k !== key;
    const inner = panels[key].firstChild;
    if (inner && inner.onShow) inner.onShow();
    requestAnimationFrame(refreshVisible);
  };
  const list = tabs(items.map(([k, l]) => [`obs-${k}`, l]), 'obs-dash', (k) => show(k.slice(4)), 'sub');
  list.setAttribute('aria-label', 'Observability views');
  selectSub = (key) => { list.select(`obs-${key}`); show(key); };
  show('dash');
  return h('div', {}, list, ...Object.values(panels));
}

function dashboards(ctx) {
  const p95 = (by, sel = '') => `histogram_quantile(0.95, sum by (${by}, le) (rate(http_server_request_duration_seconds_bucket${sel}[20s])))`;
  const watch = (ctx.scenario && ctx.scenario.watch) || [];
  return h('div', {},
    watch.length ? h('h3', { style: 'margin:4px 0 6px' }, 'This scenario\'s signals') : null,
    watch.length ? h('div', { class: 'grid2', style: 'margin-bottom:10px' }, watch.map((w) => liveChart({ title: w.title, unit: w.unit, queries: [{ query: w.query }] }))) : null,
    h('h3', { style: 'margin:4px 0 6px' }, 'Services'),
    h('div', { class: 'grid2' },
      liveChart({ title: 'Requests per service (req/s)', unit: 'rps', queries: [{ query: 'sum by (service) (rate(http_server_requests_total[20s]))', legend: ['service'] }] }),
      liveChart({ title: 'Errors per service (5xx/s)', unit: 'rps', queries: [{ query: 'sum by (service) (rate(http_server_requests_total{status=~"5.."}[20s]))', legend: ['service'] }] }),
      liveChart({ title: 'Latency p95 per service (click a dot for its trace)', unit: 's', queries: [{ query: p95('service'), legend: ['service'] }],
        exemplars: 'http_server_request_duration_seconds_bucket', onExemplar: ctx.goToTrace }),
      liveChart({ title: 'Latency p95 per route', unit: 's', queries: [{ query: p95('service, route'), legend: ['service', 'route'] }] }),
      liveChart({ title: 'CPU per process', unit: 'cores', queries: [{ query: 'rate(agent_process_cpu_seconds_total[20s])', legend: ['process'] }] }),
      liveChart({ title: 'Memory per process (resident)', unit: 'bytes', queries: [{ query: 'agent_process_resident_memory_bytes', legend: ['process'] }] }),
      liveChart({ title: 'Orders database pool (connections)', queries: [
        { query: 'sum by (state) (orders_db_pool_connections)', legend: ['state'] },
        { name: 'max', query: 'max(orders_db_pool_max_connections)' }] }),
      liveChart({ title: 'Orders worker pool and queue', queries: [
        { name: 'in use', query: 'sum(orders_concurrency_in_use)' }, { name: 'limit', query: 'max(orders_concurrency_limit)' },
        { name: 'queued', query: 'sum(orders_concurrency_queued)' }] }),
      liveChart({ title: 'Gateway pool to orders', queries: [
        { name: 'in use', query: 'sum(gateway_upstream_pool_in_use)' }, { name: 'size', query: 'max(gateway_upstream_pool_size)' },
        { name: 'waiting', query: 'sum(gateway_upstream_pool_waiting)' }] }),
      liveChart({ title: 'Worker job queue', queries: [
        { name: 'depth', query: 'sum(worker_queue_depth)' }, { name: 'busy', query: 'sum(worker_busy)' }] })));
}

function explorer() {
  const input = h('input', { type: 'text', class: 'promql mono', id: 'promql', list: 'metric-names', style: 'width:100%',
    'aria-label': 'PromQL query', value: 'sum by (service) (rate(http_server_requests_total[1m]))' });
  const names = h('datalist', { id: 'metric-names' });
  const range = h('select', { 'aria-label': 'Range' }, [['300', 'last 5 min'], ['900', 'last 15 min'], ['3600', 'last hour']].map(([v, l]) => h('option', { value: v }, l)));
  const unit = h('select', { 'aria-label': 'Unit' }, [['', 'no unit'], ['s', 'seconds'], ['ratio', 'ratio'], ['bytes', 'bytes'], ['rps', 'per second']].map(([v, l]) => h('option', { value: v }, l)));
  const status = h('div', { class: 'small', role: 'status' });
  const table = h('tbody');
  let chart = new Chart({});
  const chartBox = h('div', {}, chart.el);
  async function run(e) {
    if (e) e.preventDefault();
    const q = input.value.trim();
    if (!q) return;
    status.textContent = 'Running…';
    status.className = 'small muted';
    const rangeS = parseInt(range.value, 10);
    const step = Math.max(1, Math.round(rangeS / 240));
    const end = Date.now() / 1000;
    const params = new URLSearchParams({ query: q, start: String(end - rangeS), end: String(end), step: String(step) });
    try {
      const [r, inst] = await Promise.all([api(`/api/lab/prom/query_range?${params}`), api(`/api/lab/prom/query?${new URLSearchParams({ query: q })}`)]);
      chart = new Chart({ unit: unit.value || undefined });
      mount(chartBox, chart.el);
      chart.draw({ series: r.data.result.map((s) => ({ name: seriesName(s.metric), points: s.values.map(([t, v]) => [t * 1000, parseFloat(v)]) })),
        from: (end - rangeS) * 1000, to: end * 1000, stepMs: step * 1000 });
      const res = inst.data.resultType === 'scalar' ? [{ metric: {}, value: inst.data.result }] : inst.data.result;
      mount(table, (Array.isArray(res) ? res : []).slice(0, 200).map((s) => h('tr', {},
        h('td', { class: 'mono' }, seriesName(s.metric)), h('td', { class: 'num' }, fmtValue(parseFloat(s.value[1]), unit.value || undefined)))));
      status.textContent = `${r.data.result.length} series`;
    } catch (err) {
      status.className = 'small error-text';
      status.textContent = err.body && err.body.error ? `${err.body.errorType || 'error'}: ${err.body.error}` : err.message;
    }
  }
  api('/api/lab/prom/label/__name__/values').then((r) => mount(names, r.data.map((n) => h('option', { value: n })))).catch(() => {});
  const form = h('form', { onsubmit: run },
    h('div', { class: 'row' }, h('div', { class: 'grow' }, input), range, unit, h('button', { class: 'primary', type: 'submit' }, 'Run')), names);
  return h('div', { class: 'panel' }, h('h3', {}, 'PromQL explorer'), form, status, chartBox,
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'series (now)'), h('th', { class: 'num' }, 'value'))), table));
}

function logsPanel(ctx) {
  const service = h('select', { 'aria-label': 'Service' }, h('option', { value: '' }, 'all services'),
    ['gateway', 'orders', 'worker', 'loadgen', 'agent', 'orchestrator'].map((s) => h('option', { value: s }, s)));
  const level = h('select', { 'aria-label': 'Level' }, h('option', { value: '' }, 'any level'), ['ERROR', 'WARN', 'INFO', 'DEBUG'].map((l) => h('option', { value: l }, l)));
  const contains = h('input', { type: 'search', placeholder: 'contains…', 'aria-label': 'Text the line contains' });
  const traceId = h('input', { type: 'text', placeholder: 'trace id', 'aria-label': 'Trace id', class: 'mono', size: 34 });
  const tail = h('input', { type: 'checkbox', id: 'log-tail' });
  const out = h('div', { class: 'logs', id: 'log-lines', 'aria-live': 'off' });
  const status = h('span', { class: 'small muted', role: 'status' });
  let source = null;

  function lineEl(l) {
    return h('div', { class: `line lvl-${l.level || ''}` },
      h('span', { class: 'muted' }, `${fmtTime(l.time_ms)} `), h('b', {}, l.service), ' ', l.level ? `${l.level} ` : '',
      l.message || l.raw,
      l.fields && Object.keys(l.fields).length ? h('span', { class: 'muted' }, ` ${Object.entries(l.fields).filter(([k]) => !['timestamp', 'level', 'message', 'service', 'target', 'trace_id', 'span_id'].includes(k)).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ')}`) : '',
      l.trace_id ? [' ', h('button', { class: 'linkish', type: 'button', 'data-trace': l.trace_id, title: 'Open this trace', onclick: () => ctx.goToTrace(l.trace_id) }, `trace ${l.trace_id.slice(0, 12)}…`)] : '');
  }

  function params() {
    const p = new URLSearchParams();
    if (service.value) p.set('service', service.value);
    if (level.value) p.set('level', level.value);
    if (contains.value) p.set('contains', contains.value);
    return p;
  }

  async function search(e) {
    if (e) e.preventDefault();
    const p = params();
    if (traceId.value.trim()) p.set('trace_id', traceId.value.trim());
    p.set('limit', '300');
    status.textContent = 'Searching…';
    try {
      const r = await api(`/api/lab/telemetry/logs?${p}`);
      mount(out, r.lines.length ? r.lines.map(lineEl) : h('div', { class: 'muted' }, 'No line matches.'));
      status.textContent = `${r.lines.length} lines, newest first`;
    } catch (err) {
      status.textContent = err.message;
    }
    restartTail();
  }

  function restartTail() {
    if (source) { source.close(); source = null; }
    if (!tail.checked) return;
    source = new EventSource(withToken(`/api/lab/telemetry/logs/tail?${params()}`));
    source.onmessage = (m) => {
      if (!out.isConnected) { source.close(); return; }
      try {
        const l = JSON.parse(m.data);
        out.prepend(lineEl(l));
        while (out.childElementCount > 500) out.lastChild.remove();
      } catch { /* a keep-alive */ }
    };
    source.onerror = () => { status.textContent = 'Live tail interrupted; retrying…'; };
    status.textContent = 'Live tail on';
  }
  tail.addEventListener('change', restartTail);
  const root = h('div', { class: 'panel' },
    h('form', { class: 'row', onsubmit: search, style: 'margin-bottom:6px' }, service, level, contains, traceId,
      h('button', { type: 'submit', class: 'primary' }, 'Search'), h('label', {}, tail, ' live tail'), status),
    out);
  // Searched again each time the view is shown, unless the live tail is filling it.
  root.onShow = () => { if (!tail.checked) search(); };
  return root;
}

function tracesPanel() {
  const service = h('select', { 'aria-label': 'Service' }, h('option', { value: '' }, 'all services'));
  const operation = h('input', { type: 'text', placeholder: 'operation', 'aria-label': 'Operation', size: 16 });
  const minMs = h('input', { type: 'number', min: 0, placeholder: 'min ms', 'aria-label': 'Minimum duration (ms)', style: 'width:90px' });
  const errOnly = h('input', { type: 'checkbox', id: 'trace-errors' });
  const idInput = h('input', { type: 'text', placeholder: 'trace id', 'aria-label': 'Open trace by id', class: 'mono', size: 34 });
  const list = h('tbody', { id: 'trace-list' });
  const detail = h('div', { id: 'trace-detail' });
  const status = h('span', { class: 'small muted', role: 'status' });
  api('/api/lab/telemetry/services').then((r) => service.append(...r.services.map((s) => h('option', { value: s }, s)))).catch(() => {});

  async function search(e) {
    if (e) e.preventDefault();
    const p = new URLSearchParams({ limit: '30' });
    if (service.value) p.set('service', service.value);
    if (operation.value) p.set('operation', operation.value);
    if (minMs.value) p.set('min_duration_ms', minMs.value);
    if (errOnly.checked) p.set('status', 'error');
    try {
      const r = await api(`/api/lab/telemetry/traces?${p}`);
      status.textContent = `${r.traces.length} traces, newest first`;
      mount(list, r.traces.map((t) => h('tr', { class: t.error ? 'error-text' : '' },
        h('td', { class: 'mono' }, fmtTime(t.start_ms)),
        h('td', {}, h('button', { class: 'linkish', type: 'button', onclick: () => show(t.trace_id) }, `${t.root_service}: ${t.root_operation}`)),
        h('td', { class: 'num' }, fmtValue(t.duration_ms, 'ms')), h('td', { class: 'num' }, t.span_count),
        h('td', {}, t.services.join(', ')), h('td', {}, t.error ? 'error' : ''))));
    } catch (err) {
      status.textContent = err.message;
    }
  }

  async function show(id) {
    idInput.value = id;
    mount(detail, h('p', { class: 'muted' }, `Loading trace ${id}…`));
    try {
      const t = await api(`/api/lab/telemetry/traces/${id}?wait_ms=5000`);
      mount(detail, waterfall(t));
      detail.scrollIntoView({ block: 'nearest' });
    } catch (err) {
      mount(detail, h('div', { class: 'notice error' }, `Trace ${id}: ${err.message} (spans arrive in batches every second; a trace older than the store's retention is gone)`));
    }
  }
  traceView = show;
  const root = h('div', {},
    h('div', { class: 'panel' },
      h('form', { class: 'row', onsubmit: search, style: 'margin-bottom:6px' }, service, operation, minMs, h('label', {}, errOnly, ' errors only'),
        h('button', { type: 'submit', class: 'primary' }, 'Search'), status),
      h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); if (idInput.value.trim()) show(idInput.value.trim()); }, style: 'margin-bottom:6px' },
        idInput, h('button', { type: 'submit' }, 'Open trace')),
      h('div', { style: 'max-height:240px;overflow:auto' }, h('table', {},
        h('thead', {}, h('tr', {}, ['start', 'root', 'duration', 'spans', 'services', ''].map((c) => h('th', {}, c)))), list))),
    detail);
  root.onShow = () => search();
  return root;
}

const SERVICE_COLORS = { loadgen: '#8250df', gateway: '#1f6feb', orders: '#1a7f37', worker: '#9a6700' };

function waterfall(t) {
  const spans = t.spans;
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const children = new Map();
  for (const s of spans) {
    const parent = s.parent_span_id && byId.has(s.parent_span_id) ? s.parent_span_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(s);
  }
  const ordered = [];
  const walk = (parent, depth) => {
    for (const s of (children.get(parent) || []).sort((a, b) => a.start_ns - b.start_ns)) {
      ordered.push([s, depth]);
      walk(s.span_id, depth + 1);
    }
  };
  walk(null, 0);
  const start = Math.min(...spans.map((s) => s.start_ns));
  const end = Math.max(...spans.map((s) => s.end_ns));
  const total = Math.max(1, end - start);
  const info = h('div', { class: 'panel', id: 'span-detail' }, h('p', { class: 'muted small' }, 'Select a span for its attributes and events.'));
  const rows = ordered.map(([s, depth]) => {
    const left = ((s.start_ns - start) / total) * 100;
    const width = Math.max(0.3, ((s.end_ns - s.start_ns) / total) * 100);
    const err = s.status && s.status.code === 'error';
    const row = h('div', { class: `span${err ? ' err' : ''}`, tabindex: 0, role: 'button', 'aria-label': `${s.service} ${s.name} ${s.duration_ms} ms` },
      h('div', { class: 'label', style: `padding-left:${depth * 12}px`, title: `${s.service}: ${s.name}` }, h('b', {}, s.service), ' ', s.name),
      h('div', { class: 'track' }, h('span', { style: `left:${left}%;width:${width}%;background:${err ? '#cf222e' : SERVICE_COLORS[s.service] || '#57606a'}` })),
      h('div', { class: 'num small' }, fmtValue(s.duration_ms, 'ms')));
    const select = () => {
      for (const r of row.parentNode.children) r.classList.remove('sel');
      row.classList.add('sel');
      mount(info, spanDetail(s));
    };
    row.addEventListener('click', select);
    row.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); select(); } });
    return row;
  });
  return h('div', {},
    h('div', { class: 'panel waterfall' }, h('h3', {}, `Trace ${t.trace_id} · ${fmtValue(total / 1e6, 'ms')} · ${spans.length} spans`), rows),
    info);
}

function spanDetail(s) {
  const kv = (obj) => h('dl', { class: 'kv' }, Object.entries(obj || {}).map(([k, v]) => [h('dt', {}, k), h('dd', {}, typeof v === 'string' ? v : JSON.stringify(v))]));
  return h('div', {},
    h('h3', {}, `${s.service}: ${s.name}`),
    kv({ span_id: s.span_id, parent: s.parent_span_id || '—', kind: s.kind, start: new Date(s.start_ms).toISOString(), duration: fmtValue(s.duration_ms, 'ms'),
      status: s.status ? `${s.status.code}${s.status.message ? `: ${s.status.message}` : ''}` : '' }),
    h('h3', { style: 'margin-top:8px' }, 'Attributes'), kv(s.attributes),
    s.events && s.events.length ? [h('h3', { style: 'margin-top:8px' }, 'Events'),
      s.events.map((e) => h('div', { class: 'small' }, h('b', {}, e.name), ` at ${fmtTime(e.time_ms)} `, kv(e.attributes)))] : null);
}
