// Small helpers shared by the panel's modules: element building, the API client, formatting,
// and a minimal Markdown renderer for the guides.

/** Builds an element: h('div', {class: 'x', onclick: f}, child, 'text', [more]). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'html') el.innerHTML = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked' || k === 'disabled' || k === 'selected') el[k] = !!v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An API error: the status and the JSON body (`{error, field, message}`). */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

function token() {
  try { return localStorage.getItem('observastack.token'); } catch { return null; }
}

/** `url` with the admin token as `access_token` (WebSocket and EventSource cannot send headers). */
export function withToken(url) {
  const t = token();
  if (!t) return url;
  return `${url}${url.includes('?') ? '&' : '?'}access_token=${encodeURIComponent(t)}`;
}

/** Fetches JSON from the panel's own origin; a non-2xx answer throws an ApiError. */
export async function api(path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  let body = opts.body;
  // Every body is JSON, and says so: the lab refuses any other (issue 14's browser boundary).
  if (body !== undefined) {
    if (typeof body !== 'string') body = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  const resp = await fetch(path, { method: opts.method || 'GET', headers, body, signal: opts.signal });
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = { message: text }; }
  if (resp.status === 401 && !opts.noAuthPrompt) {
    const t2 = window.prompt('This lab needs its admin token (OBSERVASTACK_ADMIN_TOKEN):');
    if (t2) { localStorage.setItem('observastack.token', t2); return api(path, opts); }
  }
  if (!resp.ok) throw new ApiError(resp.status, json);
  return json;
}

/** A PromQL query over the last `rangeS` seconds through the panel's proxy. */
export async function queryRange(query, rangeS = 300, stepS = 2) {
  const end = Date.now() / 1000;
  const start = end - rangeS;
  const q = new URLSearchParams({ query, start: start.toFixed(3), end: end.toFixed(3), step: String(stepS) });
  const r = await api(`/api/lab/prom/query_range?${q}`);
  return r.data.result.map((s) => ({
    metric: s.metric,
    points: s.values.map(([t, v]) => [t * 1000, parseFloat(v)]).filter(([, v]) => Number.isFinite(v)),
  }));
}

/** Exemplars of `query` (a histogram's buckets) over the last `rangeS` seconds. */
export async function queryExemplars(query, rangeS = 300) {
  const end = Date.now() / 1000;
  const q = new URLSearchParams({ query, start: (end - rangeS).toFixed(3), end: end.toFixed(3) });
  try {
    const r = await api(`/api/lab/prom/query_exemplars?${q}`);
    const out = [];
    for (const s of r.data || []) {
      for (const e of s.exemplars || []) {
        const id = e.labels && (e.labels.trace_id || e.labels.traceID);
        if (id) out.push({ t: e.timestamp * 1000, v: parseFloat(e.value), traceId: id, series: s.seriesLabels });
      }
    }
    return out;
  } catch {
    return [];
  }
}

/** `{a="b"}` → a legend label from the labels that vary. */
export function seriesName(metric, prefer) {
  if (prefer) {
    const parts = prefer.map((k) => metric[k]).filter((v) => v !== undefined);
    if (parts.length) return parts.join(' ');
  }
  const entries = Object.entries(metric).filter(([k]) => !['__name__', 'job', 'instance'].includes(k));
  if (!entries.length) return metric.__name__ || 'value';
  return entries.map(([k, v]) => `${k}=${v}`).join(', ');
}

/** A value with its unit: seconds as ms or s, ratios as %, bytes as MiB. */
export function fmtValue(v, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return '—';
  if (!Number.isFinite(v)) return v > 0 ? '+Inf' : '-Inf';
  switch (unit) {
    case 's': return Math.abs(v) < 1 ? `${trim(v * 1000)} ms` : `${trim(v)} s`;
    case 'ms': return `${trim(v)} ms`;
    case 'ratio': return `${trim(v * 100)} %`;
    case 'percent': return `${trim(v)} %`;
    case 'bytes': return v >= 1 << 30 ? `${trim(v / (1 << 30))} GiB` : `${trim(v / (1 << 20))} MiB`;
    case 'cores': return `${trim(v * 100)} %`;
    case 'rps': return `${trim(v)}/s`;
    default: return unit ? `${trim(v)} ${unit}` : trim(v);
  }
}

function trim(v) {
  const a = Math.abs(v);
  const digits = a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
  return String(Number(v.toFixed(digits)));
}

/** `mm:ss` (or `h:mm:ss`). */
export function fmtClock(s) {
  s = Math.max(0, Math.floor(s));
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  const p = (n) => String(n).padStart(2, '0');
  return hh ? `${hh}:${p(mm)}:${p(ss)}` : `${p(mm)}:${p(ss)}`;
}

/** `1m30s` from seconds. */
export function fmtDuration(s) {
  if (s === null || s === undefined) return '—';
  if (s < 60) return `${Math.round(s)}s`;
  const m = Math.floor(s / 60), r = Math.round(s % 60);
  return r ? `${m}m${r}s` : `${m}m`;
}

/** `12:04:31` local time. */
export function fmtTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

/** `15m`, `1h30m`, `90s` → seconds. */
export function parseDuration(text) {
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let m;
  while ((m = re.exec(text || ''))) {
    total += parseFloat(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
  }
  return total;
}

function esc(s) {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function inline(s) {
  return esc(s)
    .replace(/`([^`]+)`/g, '<code>$1</code>')
    .replace(/\*\*([^*]+)\*\*/g, '<strong>$1</strong>')
    .replace(/(^|[\s(])\*([^*\s][^*]*)\*/g, '$1<em>$2</em>')
    .replace(/\[([^\]]+)\]\((https?:\/\/[^)\s]+|[#/][^)\s]*)\)/g, '<a href="$2" target="_blank" rel="noopener">$1</a>');
}

/** Minimal Markdown (headings, paragraphs, lists, fenced code, inline code, bold, links) as
 *  HTML; everything is escaped first, so a guide cannot inject markup. */
export function markdown(text) {
  const out = [];
  const lines = (text || '').replace(/\r/g, '').split('\n');
  let para = [], list = null, code = null;
  const flush = () => {
    if (para.length) { out.push(`<p>${inline(para.join(' '))}</p>`); para = []; }
    if (list) { out.push(`<${list.tag}>${list.items.map((i) => `<li>${inline(i)}</li>`).join('')}</${list.tag}>`); list = null; }
  };
  for (const line of lines) {
    if (code) {
      if (/^```/.test(line)) { out.push(`<pre><code>${esc(code.join('\n'))}</code></pre>`); code = null; }
      else code.push(line);
      continue;
    }
    let m;
    if (/^```/.test(line)) { flush(); code = []; }
    else if ((m = /^(#{1,4})\s+(.*)$/.exec(line))) { flush(); const n = m[1].length + 1; out.push(`<h${n}>${inline(m[2])}</h${n}>`); }
    else if ((m = /^\s*[-*]\s+(.*)$/.exec(line))) { if (para.length || (list && list.tag !== 'ul')) flush(); list = list || { tag: 'ul', items: [] }; list.items.push(m[1]); }
    else if ((m = /^\s*\d+[.)]\s+(.*)$/.exec(line))) { if (para.length || (list && list.tag !== 'ol')) flush(); list = list || { tag: 'ol', items: [] }; list.items.push(m[1]); }
    else if (!line.trim()) flush();
    else if (list && /^\s{2,}/.test(line)) list.items[list.items.length - 1] += ` ${line.trim()}`;
    else { if (list) flush(); para.push(line.trim()); }
  }
  if (code) out.push(`<pre><code>${esc(code.join('\n'))}</code></pre>`);
  flush();
  return out.join('\n');
}

/** Accessible tabs: arrow keys move between them; `onSelect(key)` shows the panel. */
export function tabs(items, selected, onSelect, cls = '') {
  const list = h('div', { role: 'tablist', class: cls });
  const buttons = items.map(([key, label]) => h('button', {
    role: 'tab', id: `tab-${key}`, 'data-tab': key, 'aria-selected': String(key === selected),
    tabindex: key === selected ? '0' : '-1',
    onclick: () => { select(key); onSelect(key); },
  }, label));
  function select(key) {
    for (const b of buttons) {
      const on = b.dataset.tab === key;
      b.setAttribute('aria-selected', String(on));
      b.tabIndex = on ? 0 : -1;
    }
  }
  list.addEventListener('keydown', (e) => {
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) return;
    let j = null;
    if (e.key === 'ArrowRight') j = (i + 1) % buttons.length;
    if (e.key === 'ArrowLeft') j = (i - 1 + buttons.length) % buttons.length;
    if (j !== null) { e.preventDefault(); buttons[j].focus(); buttons[j].click(); }
  });
  list.append(...buttons);
  list.select = select;
  return list;
}

/** Counters the browser test reads (chart renders, first renders). */
export const stats = (window.__panel = window.__panel || { chartRenders: 0, marks: {} });

/** Records a first-render mark once per name. */
export function mark(name) {
  if (!(name in stats.marks)) stats.marks[name] = performance.now();
}
