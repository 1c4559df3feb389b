// SVG time-series charts, written here rather than vendored: a line chart with a time axis,
// a legend, a hover read-out and clickable exemplar dots is ~200 lines, far under the size of
// any charting library (see the panel's decision note).

import { h, fmtValue, fmtTime, queryRange, queryExemplars, seriesName, stats } from './ui.js';

const COLORS = ['#1f6feb', '#cf222e', '#1a7f37', '#9a6700', '#8250df', '#bf3989', '#0a7ea4', '#57606a', '#fb8f44', '#6e7781'];
const NS = 'http://www.w3.org/2000/svg';
const W = 600, H = 170, L = 56, R = 8, T = 8, B = 20;

function s(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function niceTicks(min, max, n = 4) {
  if (min === max) { max = min + (min === 0 ? 1 : Math.abs(min) * 0.1); }
  const span = max - min;
  const step0 = span / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => span / st <= n) || 10 * mag;
  const lo = Math.floor(min / step) * step;
  const hi = Math.ceil(max / step) * step;
  const ticks = [];
  for (let v = lo; v <= hi + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  return { lo, hi, ticks };
}

/** A chart in `el`. `draw({series: [{name, points: [[ms, v]]}], exemplars, from, to})`. */
export class Chart {
  constructor({ unit, onExemplar, yMin, yMax, height } = {}) {
    this.unit = unit;
    this.onExemplar = onExemplar;
    this.yMin = yMin;
    this.yMax = yMax;
    this.svg = s('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
    if (height) this.svg.style.height = `${height}px`;
    this.legend = h('div', { class: 'legend' });
    this.tip = h('div', { class: 'tip', hidden: true });
    this.empty = h('div', { class: 'empty' }, 'Waiting for data…');
    this.el = h('div', { class: 'chart' }, this.svg, this.empty, this.tip, this.legend);
    this.data = null;
    this.svg.addEventListener('mousemove', (e) => this.hover(e));
    this.svg.addEventListener('mouseleave', () => { this.tip.hidden = true; });
  }

  draw(data) {
    this.data = data;
    stats.chartRenders += 1;
    const { series, exemplars = [] } = data;
    const svg = this.svg;
    svg.replaceChildren();
    const all = series.flatMap((x) => x.points);
    this.empty.hidden = all.length > 0;
    if (data.error) { this.empty.hidden = false; this.empty.textContent = data.error; this.empty.classList.add('error-text'); }
    else { this.empty.textContent = 'No data in this window yet.'; this.empty.classList.remove('error-text'); }
    // A young lab has less data than the window: fit the data, but show at least a minute.
    const first = all.length ? Math.min(...all.map((p) => p[0])) : undefined;
    const from = data.from === undefined ? first
      : first === undefined ? data.from : Math.max(data.from, Math.min(first, (data.to ?? first) - 60000));
    const to = data.to ?? Math.max(...all.map((p) => p[0]));
    let vmin = this.yMin ?? Math.min(0, ...all.map((p) => p[1]));
    let vmax = this.yMax ?? Math.max(...all.map((p) => p[1]), ...exemplars.map((e) => e.v).filter(Number.isFinite));
    if (!Number.isFinite(vmax)) vmax = 1;
    if (!Number.isFinite(vmin)) vmin = 0;
    const { lo, hi, ticks } = niceTicks(vmin, vmax);
    const x = (t) => L + ((t - from) / Math.max(1, to - from)) * (W - L - R);
    const y = (v) => T + (1 - (v - lo) / (hi - lo || 1)) * (H - T - B);
    this.scale = { x, y, from, to, lo, hi };
    for (const tv of ticks) {
      svg.append(s('line', { x1: L, x2: W - R, y1: y(tv), y2: y(tv), stroke: '#eaeef2' }));
      const label = s('text', { x: L - 4, y: y(tv) + 3, 'text-anchor': 'end', 'font-size': 10, fill: '#59636e' });
      label.textContent = fmtValue(tv, this.unit);
      svg.append(label);
    }
    for (let i = 0; i <= 4; i++) {
      const t = from + ((to - from) * i) / 4;
      const label = s('text', { x: x(t), y: H - 5, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle', 'font-size': 10, fill: '#59636e' });
      label.textContent = fmtTime(t);
      svg.append(label);
    }
    series.forEach((ser, i) => {
      const color = COLORS[i % COLORS.length];
      let d = '';
      let prev = null;
      for (const [t, v] of ser.points) {
        // A gap of more than three steps breaks the line (a restart, a stale series).
        const jump = prev === null || t - prev > (data.stepMs || 2000) * 3;
        d += `${jump ? 'M' : 'L'}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        prev = t;
      }
      svg.append(s('path', { d, fill: 'none', stroke: color, 'stroke-width': 1.6, 'vector-effect': 'non-scaling-stroke' }));
    });
    for (const e of exemplars) {
      if (!(e.t >= from && e.t <= to && Number.isFinite(e.v))) continue;
      const c = s('circle', { class: 'ex', cx: x(e.t), cy: y(Math.min(e.v, hi)), r: 3.5, fill: '#8250df', 'fill-opacity': 0.7, tabindex: 0, role: 'button' });
      const title = s('title', {});
      title.textContent = `exemplar ${fmtValue(e.v, this.unit)} at ${fmtTime(e.t)}: open trace ${e.traceId}`;
      c.append(title);
      c.dataset.traceId = e.traceId;
      const open = () => this.onExemplar && this.onExemplar(e.traceId);
      c.addEventListener('click', open);
      c.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') open(); });
      svg.append(c);
    }
    const items = series.slice(0, 12).map((ser, i) => {
      const last = ser.points[ser.points.length - 1];
      return h('span', {}, h('i', { style: `background:${COLORS[i % COLORS.length]}` }), `${ser.name} `, h('b', {}, last ? fmtValue(last[1], this.unit) : '—'));
    });
    if (series.length > 12) items.push(h('span', {}, `+${series.length - 12} more`));
    this.legend.replaceChildren(...items);
  }

  hover(e) {
    if (!this.data || !this.scale) return;
    const rect = this.svg.getBoundingClientRect();
    const px = ((e.clientX - rect.left) / rect.width) * W;
    const { from, to } = this.scale;
    const t = from + ((px - L) / (W - L - R)) * (to - from);
    const rows = [];
    for (const ser of this.data.series.slice(0, 8)) {
      let best = null;
      for (const p of ser.points) if (!best || Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p;
      if (best) rows.push(`${ser.name}: ${fmtValue(best[1], this.unit)}`);
    }
    if (!rows.length) { this.tip.hidden = true; return; }
    this.tip.hidden = false;
    this.tip.textContent = '';
    this.tip.append(h('div', {}, fmtTime(t)), ...rows.map((r) => h('div', {}, r)));
    const left = Math.min(e.clientX - rect.left + 12, rect.width - 180);
    this.tip.style.left = `${Math.max(0, left)}px`;
    this.tip.style.top = '4px';
  }
}

/** Charts that refresh themselves from PromQL once per `intervalMs` while visible. */
const live = new Set();
let timer = null;

/** A chart of `queries` ([{query, legend?: [labels], name?}]) refreshed from the range API. */
export function liveChart({ title, queries, unit, rangeS = 300, stepS = 2, exemplars, onExemplar, yMin, yMax, height }) {
  const chart = new Chart({ unit, onExemplar, yMin, yMax, height });
  const item = {
    chart,
    busy: false,
    async refresh() {
      if (this.busy || !chart.el.isConnected || chart.el.offsetParent === null) return;
      this.busy = true;
      try {
        const results = await Promise.all(queries.map((q) => queryRange(q.query, rangeS, stepS).then(
          (r) => r.map((x) => ({ name: q.name || seriesName(x.metric, q.legend), points: x.points })),
        )));
        const ex = exemplars ? await queryExemplars(exemplars, rangeS) : [];
        const to = Date.now();
        chart.draw({ series: results.flat(), exemplars: ex, from: to - rangeS * 1000, to, stepMs: stepS * 1000 });
      } catch (err) {
        const to = Date.now();
        chart.draw({ series: [], error: err.message, from: to - rangeS * 1000, to });
      } finally {
        this.busy = false;
      }
    },
  };
  live.add(item);
  if (!timer) timer = setInterval(() => {
    for (const it of live) {
      if (!it.chart.el.isConnected) live.delete(it);
      else it.refresh();
    }
  }, 1000);
  requestAnimationFrame(() => item.refresh());
  const el = h('div', { class: 'panel' }, title ? h('h3', {}, title) : null, chart.el);
  el.refresh = () => item.refresh();
  return el;
}

/** Refreshes every visible live chart now (after a tab switch). */
export function refreshVisible() {
  for (const it of live) it.refresh();
}
