// The Test tab: one form per SUT service generated from its `/config` JSON Schema (operational
// knobs only; a release's behaviour and the faults are not there), database maintenance, the
// agent's process controls and the load generator's controls. Every change goes through
// `POST /api/lab/action`, so during a run it is the learner's recorded action.

import { h, mount, api, fmtValue } from './ui.js';

async function act(action) {
  return api('/api/lab/action', { method: 'POST', body: action });
}

export function testTab(ctx) {
  const forms = h('div', {}, ctx.lab.services.map((s) => serviceForm(s)));
  return h('div', {}, forms, database(), processes(), load());
}

// Database maintenance: what an operator runs against the orders database (re-applying the
// schema creates whatever it declares and the database lacks).
function database() {
  const status = h('span', { class: 'result', role: 'status' });
  async function sync() {
    status.textContent = 'Re-applying the schema…';
    status.className = 'result';
    try {
      const r = await act({ kind: 'schema_sync', service: 'orders' });
      const created = (r && r.created) || [];
      status.textContent = created.length ? `Created: ${created.join(', ')}.` : 'The schema was already complete.';
      status.className = 'result ok-text';
    } catch (e) {
      status.textContent = `Schema sync failed: ${e.message}`;
      status.className = 'result error-text';
    }
  }
  return h('section', { class: 'panel', id: 'database-maintenance' }, h('h3', {}, 'Database maintenance'),
    h('p', { class: 'muted' }, 'Re-apply the orders schema: creates the tables and indexes it declares that the database lacks.'),
    h('div', { class: 'row' }, h('button', { type: 'button', id: 'schema-sync', onclick: sync }, 'Re-apply schema')), status);
}

function serviceForm(service) {
  const box = h('section', { class: 'panel', 'data-service': service }, h('h3', {}, `${service} configuration`), h('p', { class: 'muted' }, 'Loading…'));
  let doc = null;
  const inputs = {};
  const messages = {};
  const result = h('span', { class: 'result', role: 'status' });

  const dirty = new Set();
  async function load() {
    try {
      const fresh = await api(`/api/lab/config/${service}`);
      // The lab changes under the form (a deploy in the timeline, another tool): show the
      // current values unless the learner is editing.
      const same = doc && JSON.stringify(doc.values) === JSON.stringify(fresh.values);
      doc = fresh;
      if (!same && !dirty.size && !box.contains(document.activeElement)) render();
    } catch (e) {
      if (!doc) mount(box, h('h3', {}, `${service} configuration`), h('p', { class: 'error-text' }, `Could not read ${service}'s /config: ${e.message}`));
    }
  }
  const timer = setInterval(() => {
    if (!box.isConnected) clearInterval(timer);
    else if (box.offsetParent !== null) load();
  }, 2000);

  function field(name, schema) {
    const id = `cfg-${service}-${name}`;
    const value = doc.values[name];
    let input;
    if (schema.enum) {
      input = h('select', { id, name }, schema.enum.map((v) => h('option', { value: String(v), selected: v === value }, String(v))));
    } else if (schema.type === 'boolean') {
      input = h('input', { id, name, type: 'checkbox', checked: value });
    } else if (schema.type === 'integer' || schema.type === 'number') {
      // No min/max on the input: the server's message is the one shown at the field.
      input = h('input', { id, name, type: 'number', step: schema.type === 'integer' ? '1' : 'any', value: String(value) });
    } else {
      input = h('input', { id, name, type: 'text', value: value ?? '' });
    }
    input.dataset.type = schema.enum ? 'enum' : schema.type;
    input.addEventListener('input', () => {
      dirty.add(name);
      input.classList.add('changed');
      input.removeAttribute('aria-invalid');
      messages[name].textContent = '';
    });
    inputs[name] = input;
    const msg = h('div', { class: 'msg', id: `${id}-msg`, role: 'alert' });
    input.setAttribute('aria-describedby', `${id}-help ${id}-msg`);
    messages[name] = msg;
    const range = schema.enum ? `one of ${schema.enum.join(', ')}`
      : schema.minimum !== undefined ? `${schema.minimum} to ${schema.maximum}`
        : schema.maxLength ? `${schema.minLength || 0}–${schema.maxLength} chars` : '';
    return h('div', { class: 'field' },
      h('label', { for: id }, name),
      input,
      h('div', { class: 'help', id: `${id}-help` }, schema.description || '', ' ', h('span', {}, `(${[range, schema.default !== undefined ? `default ${JSON.stringify(schema.default)}` : ''].filter(Boolean).join('; ')})`)),
      msg);
  }

  /** The value of a field the learner touched. */
  function read(name) {
    const input = inputs[name];
    let v;
    if (input.type === 'checkbox') v = input.checked;
    else if (input.dataset.type === 'integer' || input.dataset.type === 'number') {
      // Sent as typed when it is not a number, so the server names the field.
      v = input.value.trim() === '' ? input.value : Number(input.value);
      if (Number.isNaN(v)) v = input.value;
    } else v = input.value;
    return v;
  }

  function render() {
    dirty.clear();
    const props = (doc.schema && doc.schema.properties) || {};
    const form = h('form', { class: 'config', novalidate: true, onsubmit: apply },
      Object.entries(props).map(([name, schema]) => field(name, schema)),
      h('div', { class: 'row', style: 'margin-top:8px' },
        h('button', { class: 'primary', type: 'submit', id: `apply-${service}` }, `Apply to ${service}`),
        h('button', { type: 'button', onclick: () => render() }, 'Discard changes'), result));
    mount(box, h('h3', {}, `${service} configuration`), form);
  }

  async function apply(e) {
    e.preventDefault();
    const values = {};
    for (const name of dirty) values[name] = read(name);
    for (const m of Object.values(messages)) m.textContent = '';
    if (!Object.keys(values).length) { result.textContent = 'Nothing changed.'; result.className = 'result muted'; return; }
    result.textContent = 'Applying…';
    result.className = 'result muted';
    try {
      const r = await act({ kind: 'config', service, values });
      doc = { ...doc, values: r.values || { ...doc.values, ...values } };
      render();
      const changed = Object.keys(r.changed || values);
      result.textContent = changed.length ? `Applied: ${changed.join(', ')} changed.` : 'Applied: the values were already these.';
      result.className = 'result ok-text';
    } catch (err) {
      const f = err.body && err.body.field;
      if (f && inputs[f]) {
        inputs[f].setAttribute('aria-invalid', 'true');
        messages[f].textContent = err.body.message || err.message;
        inputs[f].focus();
        result.textContent = 'Refused: nothing was changed.';
      } else {
        result.textContent = `Refused: ${err.message}`;
      }
      result.className = 'result error-text';
    }
  }
  load();
  return box;
}

function processes() {
  const body = h('tbody', { id: 'processes' });
  const status = h('span', { class: 'result', role: 'status' });
  const root = h('section', { class: 'panel' }, h('h3', {}, 'Processes'),
    h('table', {}, h('thead', {}, h('tr', {}, ['process', 'state', 'pid', 'up for', 'restarts', 'CPU s', 'memory', 'actions'].map((c) => h('th', {}, c)))), body), status);
  async function command(name, cmd, signal) {
    status.textContent = `${cmd} ${name}…`;
    try {
      await act({ kind: 'process', name, command: cmd, ...(signal ? { signal } : {}) });
      status.textContent = `${cmd} ${name}: done.`;
      status.className = 'result ok-text';
    } catch (e) {
      status.textContent = `${cmd} ${name}: ${e.message}`;
      status.className = 'result error-text';
    }
    refresh();
  }
  let busy = false;
  async function refresh() {
    if (busy || !root.isConnected) return;
    if (root.offsetParent === null && body.childElementCount) return;
    // Keep a row's controls if focus is in them: rebuilding would steal the keyboard focus.
    if (body.contains(document.activeElement)) return;
    busy = true;
    try {
      const r = await api('/api/lab/processes');
      mount(body, r.processes.map((p) => {
        const sig = h('select', { 'aria-label': `Signal for ${p.name}` }, ['TERM', 'KILL', 'STOP', 'CONT', 'HUP'].map((s) => h('option', { value: s }, s)));
        return h('tr', { 'data-process': p.name },
          h('td', {}, h('b', {}, p.name)),
          h('td', { class: p.state === 'running' ? 'ok-text' : 'error-text' }, `● ${p.state}`),
          h('td', {}, p.pid ?? '—'),
          h('td', {}, p.started_at_ms && p.pid ? `${Math.round((Date.now() - p.started_at_ms) / 1000)} s` : '—'),
          h('td', { class: 'num' }, p.restarts),
          h('td', { class: 'num' }, p.cpu_seconds !== undefined ? p.cpu_seconds.toFixed(1) : '—'),
          h('td', { class: 'num' }, p.memory_bytes ? fmtValue(p.memory_bytes, 'bytes') : '—'),
          h('td', {}, h('div', { class: 'row' },
            h('button', { type: 'button', onclick: () => command(p.name, 'restart') }, 'Restart'),
            h('button', { type: 'button', onclick: () => command(p.name, 'stop'), disabled: p.state === 'stopped' }, 'Stop'),
            h('button', { type: 'button', onclick: () => command(p.name, 'start'), disabled: p.state === 'running' }, 'Start'),
            sig, h('button', { type: 'button', onclick: () => command(p.name, 'signal', sig.value) }, 'Send'))));
      }));
    } catch (e) {
      status.textContent = `The agent did not answer: ${e.message}`;
    } finally {
      busy = false;
    }
  }
  const timer = setInterval(() => { if (!root.isConnected) clearInterval(timer); else refresh(); }, 2000);
  refresh();
  return root;
}

function load() {
  const rate = h('input', { type: 'number', min: 0, step: 'any', id: 'load-rate', style: 'width:90px' });
  const pattern = h('select', { id: 'load-pattern', 'aria-label': 'Pattern' }, ['constant', 'ramp', 'spike', 'wave'].map((p) => h('option', { value: p }, p)));
  const extra = h('span', { class: 'row' });
  const now = h('span', { class: 'muted small' });
  const status = h('span', { class: 'result', role: 'status' });
  const pauseBtn = h('button', { type: 'button', id: 'load-pause' }, 'Pause');
  const fields = {
    ramp: [['to', 'to req/s', 100], ['duration_s', 'over s', 60]],
    spike: [['peak', 'peak req/s', 200], ['every_s', 'every s', 60], ['duration_s', 'for s', 10]],
    wave: [['amplitude', 'amplitude', 10], ['period_s', 'period s', 60]],
    constant: [],
  };
  let plan = null;
  function renderExtra(current) {
    mount(extra, fields[pattern.value].map(([k, label, def]) => h('label', { class: 'small' }, `${label} `,
      h('input', { type: 'number', step: 'any', 'data-k': k, value: String(current && current[k] !== undefined ? current[k] : def), style: 'width:80px' }))));
  }
  pattern.addEventListener('change', () => renderExtra(null));
  async function refresh() {
    try {
      const r = await api('/api/lab/loadgen/load');
      plan = r.plan;
      rate.value = String(plan.rate);
      const p = plan.pattern || { kind: 'constant' };
      pattern.value = p.kind || 'constant';
      renderExtra(p);
      pauseBtn.textContent = plan.paused ? 'Resume' : 'Pause';
      now.textContent = `now ${fmtValue(r.current_rate, 'rps')}${plan.paused ? ' (paused)' : ''}`;
    } catch (e) {
      status.textContent = `The load generator did not answer: ${e.message}`;
    }
  }
  async function send(body, what) {
    try {
      await act({ kind: 'load', body });
      status.textContent = `${what}: done.`;
      status.className = 'result ok-text';
    } catch (e) {
      status.textContent = `${what}: ${e.message}`;
      status.className = 'result error-text';
    }
    refresh();
  }
  const form = h('form', { class: 'row', onsubmit: (e) => {
    e.preventDefault();
    const p = { kind: pattern.value };
    for (const input of extra.querySelectorAll('input')) p[input.dataset.k] = Number(input.value);
    send({ rate: Number(rate.value), pattern: p }, 'Load changed');
  } },
  h('label', {}, 'rate (req/s) ', rate), h('label', {}, 'pattern ', pattern), extra,
  h('button', { type: 'submit', class: 'primary' }, 'Apply load'), pauseBtn, now, status);
  pauseBtn.addEventListener('click', () => send({ paused: !(plan && plan.paused) }, plan && plan.paused ? 'Resumed' : 'Paused'));
  refresh();
  return h('section', { class: 'panel' }, h('h3', {}, 'Load (simulated users)'), form);
}
