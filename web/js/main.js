// The panel's entry point: the router (the URL hash holds the page and the run id, so a reload
// lands where the learner was), the catalogue, and the run view with its WebSocket, header,
// sidebar (criteria and incident feed), User tab and debrief.

import { h, mount, api, withToken, ApiError, fmtValue, fmtClock, fmtDuration, fmtTime, parseDuration, markdown, tabs, mark, stats } from './ui.js';
import { liveChart, refreshVisible } from './chart.js';
import { observabilityTab, openTrace } from './obs.js';
import { testTab } from './test.js';

const app = document.getElementById('app');
let lab = null;
let current = null; // the run view's teardown

const FINAL = new Set(['resolved', 'failed', 'timed_out', 'aborted']);

async function labInfo() {
  if (!lab) lab = await api('/api/lab');
  return lab;
}

function route() {
  if (current) { current(); current = null; }
  const m = /^#\/run\/([^/?]+)(?:\/(\w+))?/.exec(location.hash);
  if (m) runView(decodeURIComponent(m[1]), m[2] || 'user');
  else if (/^#\/investigate/.test(location.hash)) incidents();
  else if (/^#\/challenge/.test(location.hash)) challenge();
  else catalogue();
}

/** The three ways to pick an incident; the current one is marked. */
function playNav(currentPlay) {
  const items = [['guided', '#/', 'Guided lessons'], ['investigate', '#/investigate', 'Investigate'], ['challenge', '#/challenge', 'Challenge']];
  return h('nav', { class: 'plays', 'aria-label': 'Ways to play' }, items.map(([key, href, label]) =>
    h('a', { href, 'data-play': key, 'aria-current': key === currentPlay ? 'page' : null, class: key === currentPlay ? 'on' : '' }, label)));
}

/** The time-scale the page was opened with (`?time_scale=2`), for demonstrations and tests. */
function withTimeScale(body) {
  const params = new URLSearchParams(location.search);
  if (params.get('time_scale')) body.time_scale = parseFloat(params.get('time_scale'));
  return body;
}

async function startRun(body, message, what) {
  try {
    const run = await api('/api/runs', { method: 'POST', body: withTimeScale(body) });
    location.hash = `#/run/${run.id}`;
    return true;
  } catch (e) {
    mount(message, h('div', { class: 'notice error', role: 'alert' }, `Could not start ${what}: ${e.message}`));
    return false;
  }
}

/** Shows a picking page's frame while `paths` load (with the lab's info); their answers, or
 * null after showing why they did not come. */
async function loadPage(main, name, title, loading, paths) {
  document.title = `ObservaStack — ${name}`;
  mount(main, h('p', { class: 'loading' }, loading));
  mount(app, topBar(h('span', { class: 'title' }, title)), main);
  try {
    const answers = await Promise.all([...paths.map((p) => api(p)), labInfo()]);
    return answers.slice(0, paths.length);
  } catch (e) {
    mount(main, h('div', { class: 'notice error' }, `The orchestrator did not answer: ${e.message}`));
    return null;
  }
}

/* ---------------------------------------------------------------- investigate */

// Symptom cards: what users and the pager report, never the cause. Launching one plays it
// without its title, objectives, dashboards or timed hints; the debrief reveals them.
async function incidents() {
  const main = h('main', { class: 'catalogue', id: 'main' });
  const loaded = await loadPage(main, 'investigate', 'Investigate', 'Loading the incidents…', ['/api/incidents', '/api/runs?limit=1']);
  if (!loaded) return;
  const [data, runs] = loaded;
  const message = h('div', { 'aria-live': 'polite' });
  const active = runs.active;
  const cards = data.incidents.map((c) => {
    const available = !c.requires.includes('postgres') || lab.postgres;
    const launch = h('button', { class: 'primary', disabled: !available || !!active, 'data-launch': c.card,
      'aria-label': `Investigate ${c.title}`,
      onclick: async () => { launch.disabled = true; if (!await startRun({ incident: c.card, play: 'investigate' }, message, c.title)) launch.disabled = false; } }, 'Investigate');
    return h('article', { class: `card${available ? '' : ' unavailable'}`, role: 'listitem', 'data-incident': c.card },
      h('h2', {}, c.title),
      h('div', { class: 'meta' }, h('span', { class: `badge ${c.difficulty}` }, c.difficulty), ' · about ', c.estimated_time,
        c.solved ? [' · ', h('span', { class: 'badge resolved' }, 'solved')] : null),
      h('p', { class: 'small', style: 'margin:4px 0' }, c.briefing),
      available ? null : h('div', { class: 'small error-text' }, 'Needs PostgreSQL: start the lab with DATABASE_URL=postgres://… to play it.'),
      h('div', { class: 'actions' }, launch));
  });
  mount(main,
    playNav('investigate'),
    h('h1', { style: 'font-size:20px;margin:4px 0' }, 'Pick a symptom'),
    h('p', { class: 'muted', style: 'margin:0' }, 'Each card is what users or the pager reported. The run shows only that: find the cause with the signals, fix it, and the debrief tells you what it was. Hints come when you ask, and cost points.'),
    active ? h('div', { class: 'notice' }, 'A run is in progress. ', h('a', { href: `#/run/${active}` }, 'Return to it'), '.') : null,
    message, h('div', { class: 'cards', role: 'list' }, cards));
  mark('incidents');
}

/* ---------------------------------------------------------------- challenge */

// A random incident the learner has not solved, played for its symptom, timed and scored. The
// seed replays a draw.
async function challenge() {
  const main = h('main', { class: 'catalogue', id: 'main' });
  const loaded = await loadPage(main, 'challenge', 'Challenge', 'Loading…', ['/api/lab/scenarios', '/api/runs?limit=1']);
  if (!loaded) return;
  const [data, runs] = loaded;
  const active = runs.active;
  const difficulty = h('select', { id: 'challenge-difficulty', 'aria-label': 'Difficulty' },
    h('option', { value: '' }, 'Any difficulty'),
    ...[['1', 'beginner'], ['2', 'intermediate'], ['3', 'advanced']].map(([v, l]) => h('option', { value: v }, l)));
  const tagSel = h('select', { id: 'challenge-tag', 'aria-label': 'Tag' }, h('option', { value: '' }, 'Any tag'),
    ...[...new Set(data.scenarios.flatMap((s) => s.tags))].sort().map((t) => h('option', { value: t }, t)));
  const seed = h('input', { id: 'challenge-seed', type: 'number', min: '0', step: '1', placeholder: 'new draw', 'aria-label': 'Seed (to replay a draw)' });
  const message = h('div', { 'aria-live': 'polite' });
  const draw = h('button', { class: 'primary', id: 'draw', disabled: !!active, onclick: async () => {
    const body = { play: 'challenge' };
    if (difficulty.value) body.difficulty = difficulty.value;
    if (tagSel.value) body.tag = tagSel.value;
    if (seed.value !== '') {
      const n = Number(seed.value);
      if (!Number.isSafeInteger(n) || n < 0) { mount(message, h('div', { class: 'notice error', role: 'alert' }, 'A seed is a whole number from 0.')); return; }
      body.seed = n;
    }
    draw.disabled = true;
    if (!await startRun(body, message, 'a challenge')) draw.disabled = false;
  } }, 'Draw an incident');
  mount(main,
    playNav('challenge'),
    h('h1', { style: 'font-size:20px;margin:4px 0' }, 'Challenge'),
    h('p', { class: 'muted', style: 'margin:0' }, `An incident you have not solved, drawn at random, with only its symptom. You score 60 for resolving it, up to 40 more for speed; each hint and each action that makes things worse costs 10. The draw's seed (in the run's feed) replays it.`),
    active ? h('div', { class: 'notice' }, 'A run is in progress. ', h('a', { href: `#/run/${active}` }, 'Return to it'), '.') : null,
    message,
    h('div', { class: 'filters' }, difficulty, tagSel, h('label', {}, 'Seed ', seed), draw));
  mark('challenge');
}

window.addEventListener('hashchange', () => {
  // Tab changes rewrite the hash too; only a different page or run re-renders.
  const m = /^#\/run\/([^/?]+)/.exec(location.hash);
  if (m && current && current.runId === decodeURIComponent(m[1])) return;
  route();
});

function topBar(...children) {
  return h('header', { class: 'top' }, h('a', { class: 'brand', href: '#/' }, 'ObservaStack'), ...children);
}

/* ---------------------------------------------------------------- catalogue */

async function catalogue() {
  const main = h('main', { class: 'catalogue', id: 'main' });
  const loaded = await loadPage(main, 'scenarios', 'Scenarios', 'Loading the scenarios…', ['/api/lab/scenarios', '/api/runs?limit=8']);
  if (!loaded) return;
  const [data, runs] = loaded;
  const scenarios = data.scenarios;
  const search = h('input', { type: 'search', placeholder: 'Search title, tag or id…', 'aria-label': 'Search scenarios', id: 'search' });
  const difficulty = h('select', { 'aria-label': 'Difficulty' },
    h('option', { value: '' }, 'Any difficulty'),
    ...['beginner', 'intermediate', 'advanced'].map((d) => h('option', { value: d }, d)));
  const tagSel = h('select', { 'aria-label': 'Tag' }, h('option', { value: '' }, 'Any tag'),
    ...[...new Set(scenarios.flatMap((s) => s.tags))].sort().map((t) => h('option', { value: t }, t)));
  const onlyAvail = h('input', { type: 'checkbox', id: 'only-available' });
  const cards = h('div', { class: 'cards', role: 'list' });
  const message = h('div', { 'aria-live': 'polite' });

  const active = data.active_run || runs.active;
  const banner = active ? h('div', { class: 'notice' }, 'A run is in progress. ', h('a', { href: `#/run/${active}` }, 'Return to it'), '.') : null;

  function render() {
    const q = search.value.trim().toLowerCase();
    const shown = scenarios.filter((s) =>
      (!q || [s.id, s.title, ...s.tags].some((x) => x.toLowerCase().includes(q)))
      && (!difficulty.value || s.difficulty === difficulty.value)
      && (!tagSel.value || s.tags.includes(tagSel.value))
      && (!onlyAvail.checked || s.available));
    mount(cards, shown.length ? shown.map(card) : h('p', { class: 'muted' }, 'No scenario matches these filters.'));
  }

  function card(s) {
    const launch = h('button', { class: 'primary', disabled: !s.available || !!active, 'data-launch': s.id,
      'aria-label': `Launch ${s.title}`, onclick: () => start(s, launch) }, 'Launch');
    return h('article', { class: `card${s.available ? '' : ' unavailable'}`, role: 'listitem', 'data-scenario': s.id },
      h('h2', {}, s.title),
      h('div', { class: 'meta' },
        h('span', { class: `badge ${s.difficulty}` }, s.difficulty), ' · about ', s.estimated_time,
        s.last_outcome ? [' · last: ', h('span', { class: `badge ${s.last_outcome}` }, s.last_outcome.replace('_', ' '))] : ' · not played yet'),
      h('div', {}, s.tags.map((t) => h('span', { class: 'tag' }, t))),
      s.objectives && s.objectives.length ? h('ul', { class: 'small' }, s.objectives.map((o) => h('li', {}, o))) : null,
      h('div', { class: 'small' }, 'Requires: ', s.requires.length ? s.requires.join(', ') : 'nothing beyond the lab'),
      s.available ? null : h('div', { class: 'small error-text' }, s.unavailable_reason),
      h('div', { class: 'actions' }, launch, h('span', { class: 'muted small mono' }, s.id)));
  }

  async function start(s, button) {
    button.disabled = true;
    if (!await startRun({ scenario: s.id }, message, s.title)) button.disabled = false;
  }

  for (const el of [search, difficulty, tagSel, onlyAvail]) el.addEventListener('input', render);
  const recent = runs.runs.length ? h('section', { class: 'panel', style: 'margin-top:16px' },
    h('h3', {}, 'Recent runs'),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'run'), h('th', {}, 'scenario'), h('th', {}, 'started'), h('th', {}, 'status'))),
      h('tbody', {}, runs.runs.map((r) => h('tr', {},
        h('td', {}, h('a', { href: `#/run/${r.id}` }, r.id.slice(0, 8))),
        h('td', {}, r.scenario_id || (r.incident && r.incident.title) || '—'),
        h('td', {}, new Date(r.created_at_ms).toLocaleString()),
        h('td', {}, h('span', { class: `badge ${r.status}` }, r.status.replace('_', ' '))))))))
    : null;
  mount(main,
    playNav('guided'),
    h('h1', { style: 'font-size:20px;margin:4px 0' }, 'Choose an incident'),
    h('p', { class: 'muted', style: 'margin:0' }, 'Each scenario breaks the shop in a realistic way. Investigate with the same tools an on-call engineer uses, fix it, and read the debrief.'),
    banner, message,
    h('div', { class: 'filters' }, search, difficulty, tagSel, h('label', {}, onlyAvail, ' available only'),
      lab.shop_url ? h('a', { href: lab.shop_url, target: '_blank', rel: 'noopener', style: 'margin-left:auto' }, 'Open the shop ↗') : null),
    cards, recent);
  render();
  mark('catalogue');
}

/* ---------------------------------------------------------------- run view */

function criterionClass(c) {
  const st = c.status;
  if (!st) return 'pending';
  if (st.met) return 'met';
  if (st.passing) return 'holding';
  return 'failing';
}

function renderCriteria(list, live) {
  if (!live || !live.criteria || !live.criteria.length) {
    mount(list, h('li', { class: 'criterion muted' }, 'No live evaluation (the run is not active).'));
    return;
  }
  mount(list, live.criteria.map((c) => {
    const cls = criterionClass(c);
    const st = c.status || {};
    const icon = { met: '✓', holding: '●', failing: '✗', pending: '…' }[cls];
    const value = st.value !== null && st.value !== undefined ? fmtValue(st.value, c.unit) : (st.problem || 'no value yet');
    const thr = c.expectation.replace(/(-?\d+(?:\.\d+)?(?:e-?\d+)?)/g, (n) => fmtValue(parseFloat(n), c.unit));
    const held = !c.expectation ? (st.met ? 'met' : 'not met') : st.passing ? (st.met ? `held ${fmtDuration(st.held_s)}` : `held ${fmtDuration(st.held_s)} of ${fmtDuration(c.for_s)}`) : `must hold ${fmtDuration(c.for_s)}`;
    const pct = c.for_s ? Math.min(100, (100 * (st.held_s || 0)) / c.for_s) : 0;
    return h('li', { class: `criterion ${cls}`, 'data-criterion': c.name, 'data-state': cls, title: c.query },
      h('div', { class: 'name' }, h('span', { class: 'icon', 'aria-hidden': 'true' }, icon), c.name),
      h('div', { class: 'detail' }, c.expectation ? `now ${value} · expected ${thr} · ${held}` : `final ${value} · ${held}`,
        h('span', { class: 'sr-only' }, ` (${cls})`)),
      h('div', { class: 'bar', 'aria-hidden': 'true' }, h('span', { style: `width:${pct}%` })));
  }));
}

function describeAction(a) {
  if (!a) return '';
  switch (a.kind) {
    case 'config': return `set ${a.service} ${Object.entries(a.values || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')}`;
    case 'deploy': return `deployed ${a.service} ${a.version}`;
    case 'process': return `${a.command} ${a.name}${a.signal ? ` (${a.signal})` : ''}`;
    case 'load': return `load ${JSON.stringify(a.body)}`;
    case 'schema_sync': return `re-applied the ${a.service} schema`;
    case 'fault': return `fault on ${a.service}: ${Object.entries(a.values || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')}`;
    default: return a.kind;
  }
}

/** One incident-feed line for an event, or null for events the feed does not show. */
function feedItem(e, run) {
  const d = e.data || {};
  const when = h('span', { class: 'when' }, fmtTime(e.time_ms));
  const li = (cls, ...content) => h('li', { class: cls, 'data-kind': e.kind }, when, ...content);
  switch (e.kind) {
    case 'notify': return li(`notify ${d.severity || ''}`, d.severity === 'info' ? 'ℹ ' : '⚠ ', d.message);
    case 'hint': return li('hint', h('strong', {}, `Hint ${d.index + 1}/${d.count}: `), h('span', { html: markdown(d.text).replace(/^<p>|<\/p>$/g, '') }));
    case 'learner_action': return li(`you${d.ok ? '' : ' bad'}`, h('strong', {}, 'You: '), describeAction(d.action), d.source ? ` (with ${d.source})` : '', d.ok ? '' : ` — refused: ${d.error || d.status}`);
    case 'fix': return li('you', h('strong', {}, 'Reference fix: '), describeAction(d.action));
    case 'status': return li('status', `Run ${String(d.status).replace('_', ' ')}`, d.reason ? ` — ${d.reason}` : '');
    case 'phase': return li('phase', `Phase: ${d.name}`);
    case 'steady_state': return li(d.held ? 'status' : 'bad', d.held ? 'Steady state confirmed: the shop is healthy before the incident.' : 'The steady state did not hold.');
    case 'criteria_broken': return li('bad', 'The success criteria are failing.');
    case 'criteria_met': return li('ok-text', '✓ Every success criterion held for its window.');
    case 'note': return li('note', d.text);
    case 'draw': return li('note', `Drawn among ${d.pool} incidents with seed ${d.seed}${d.difficulty ? `, ${d.difficulty}` : ''}${d.tag ? `, tag ${d.tag}` : ''}: enter it on the Challenge page to replay this draw.`);
    case 'alert': {
      // From Alertmanager (POST /api/alerts): its name, severity and summary.
      const firing = d.status === 'firing';
      return li(`alert ${firing ? 'firing' : 'resolved'} ${d.severity || ''}`, firing ? '⚠ ' : '✓ ',
        h('strong', {}, `Alert ${firing ? 'firing' : 'resolved'}: `), d.name,
        d.severity ? ` (${d.severity})` : '', d.summary ? ` — ${d.summary}` : '');
    }
    default: return null;
  }
}

async function runView(runId, tab) {
  let closed = false;
  let ws = null, retry = 0, retryTimer = null, tick = null;
  let run = null, scenario = null, events = [], live = null, debriefShown = false, tabList = null, debriefLoaded = false;
  const teardown = () => {
    closed = true;
    if (ws) ws.close();
    clearTimeout(retryTimer);
    clearInterval(tick);
  };
  teardown.runId = runId;
  current = teardown;

  const titleEl = h('span', { class: 'title' }, 'Loading the run…');
  const phaseEl = h('span', { class: 'phase', 'aria-label': 'phase' }, '…');
  const timerEl = h('span', { class: 'timer', 'aria-label': 'time elapsed' }, '--:--');
  const connEl = h('span', { class: 'conn', role: 'status' });
  const completeBtn = h('button', { class: 'primary', id: 'complete', onclick: () => control('complete') }, 'Complete');
  const abortBtn = h('button', { id: 'abort', onclick: () => control('abort') }, 'Abort');
  const criteriaList = h('ul', { class: 'criteria', id: 'criteria', 'aria-live': 'polite' });
  // Investigate and challenge runs: hints on request, each one counted in the score.
  const hintBtn = h('button', { id: 'ask-hint', hidden: true, onclick: askHint }, 'Ask for a hint');
  const feedList = h('ul', { class: 'feed', id: 'feed' });
  const briefing = h('details', { class: 'briefing', open: true });
  const tabPanels = {};
  const main = h('main', { id: 'main' }, briefing);
  const aside = h('aside', { 'aria-label': 'Success criteria and incident feed' },
    h('h2', {}, 'Success criteria'), criteriaList, hintBtn, h('h2', {}, 'Incident feed'), feedList);
  mount(app,
    topBar(titleEl, phaseEl, timerEl, connEl, h('span', { class: 'grow' }), completeBtn, abortBtn),
    h('div', { class: 'run' }, main, aside));

  let state;
  try {
    [state] = await Promise.all([api(`/api/runs/${encodeURIComponent(runId)}`), labInfo()]);
  } catch (e) {
    mount(main, h('div', { class: 'notice error' }, e instanceof ApiError && e.status === 404
      ? ['No run ', runId, '. ', h('a', { href: '#/' }, 'Back to the scenarios')] : `Could not load the run: ${e.message}`));
    return;
  }
  if (closed) return;
  applyState(state);

  const tabItems = [['user', 'User'], ['obs', 'Observability'], ['test', 'Test'], ['debrief', 'Debrief']];
  const selectTab = (key) => {
    for (const [k, p] of Object.entries(tabPanels)) p.hidden = k !== key;
    if (key === 'debrief') showDebrief();
    history.replaceState(null, '', `#/run/${runId}/${key}`);
    requestAnimationFrame(refreshVisible);
  };
  tabList = tabs(tabItems, tab, selectTab);
  tabList.setAttribute('aria-label', 'Run views');
  main.append(tabList);
  const ctx = { runId, lab, scenario, goToTrace: (id) => { tabList.select('obs'); selectTab('obs'); openTrace(id); } };
  tabPanels.user = h('section', { role: 'tabpanel', 'aria-labelledby': 'tab-user' }, userTab(ctx));
  tabPanels.obs = h('section', { role: 'tabpanel', 'aria-labelledby': 'tab-obs' }, observabilityTab(ctx));
  tabPanels.test = h('section', { role: 'tabpanel', 'aria-labelledby': 'tab-test' }, testTab(ctx));
  tabPanels.debrief = h('section', { role: 'tabpanel', 'aria-labelledby': 'tab-debrief', id: 'debrief' },
    h('p', { class: 'muted' }, 'The debrief (timeline, time to mitigate, root cause and guide) appears when the run ends: complete it when you think the incident is fixed.'));
  main.append(...Object.values(tabPanels));
  selectTab(tab);
  if (FINAL.has(run.status)) ended();
  tick = setInterval(renderHeader, 1000);
  connect();
  mark('run');

  function applyState(st) {
    run = st.run;
    scenario = st.scenario || scenario;
    events = st.events || [];
    live = st.live;
    document.title = `ObservaStack — ${scenario ? scenario.title : run.scenario_id}`;
    titleEl.textContent = scenario ? scenario.title : run.scenario_id;
    if (scenario) {
      mount(briefing, h('summary', {}, 'Briefing'), h('p', {}, scenario.briefing.trim()),
        scenario.objectives.length ? h('div', { class: 'small' }, h('strong', {}, 'Objectives: '), scenario.objectives.join(' · ')) : null);
      if (FINAL.has(run.status)) briefing.open = false;
    }
    mount(feedList, events.map((e) => feedItem(e, run)).filter(Boolean).reverse());
    renderCriteria(criteriaList, live);
    renderHeader();
    if (FINAL.has(run.status)) ended();
  }

  function renderHeader() {
    if (!run) return;
    const phase = FINAL.has(run.status) ? run.status : (live && live.phase) || run.status;
    phaseEl.textContent = `phase: ${phase.replace('_', ' ')}`;
    phaseEl.className = `phase ${phase} ${run.status}`;
    const limit = scenario ? parseDuration(scenario.time_limit) / (run.time_scale || 1) : 0;
    const start = run.started_at_ms || run.created_at_ms;
    const end = run.ended_at_ms || Date.now();
    timerEl.textContent = `${fmtClock((end - start) / 1000)}${limit ? ` / ${fmtClock(limit)}` : ''}${run.time_scale > 1 ? ` (×${run.time_scale})` : ''}`;
    const over = FINAL.has(run.status);
    completeBtn.disabled = over;
    abortBtn.disabled = over;
    const onRequest = scenario && scenario.hints_on_request;
    hintBtn.hidden = !onRequest || over;
    if (onRequest) {
      const given = events.filter((e) => e.kind === 'hint').length;
      const left = scenario.hint_count - given;
      hintBtn.disabled = left <= 0 || run.status !== 'running';
      hintBtn.textContent = left > 0 ? `Ask for a hint (${left} left, −10 points each)` : 'No hint left';
    }
  }

  async function askHint() {
    hintBtn.disabled = true;
    try {
      await api(`/api/runs/${runId}/hints`, { method: 'POST', body: {} });
    } catch (e) {
      feedList.prepend(h('li', { class: 'bad' }, `No hint: ${e.message}`));
      renderHeader();
    }
  }

  function onEvent(e) {
    if (events.some((x) => x.id === e.id)) return;
    events.push(e);
    if (e.kind === 'status') {
      run.status = e.data.status;
      if (e.data.reason) run.reason = e.data.reason;
      if (FINAL.has(run.status)) run.ended_at_ms = run.ended_at_ms || e.time_ms;
      if (run.status === 'running' && !run.started_at_ms) run.started_at_ms = e.time_ms;
    }
    const item = feedItem(e, run);
    if (item) feedList.prepend(item);
    renderHeader();
    if (FINAL.has(run.status)) ended();
  }

  function connect() {
    if (closed || FINAL.has(run.status)) return;
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    ws = new WebSocket(withToken(`${proto}://${location.host}/api/runs/${encodeURIComponent(runId)}/ws`));
    ws.onopen = () => { retry = 0; connEl.textContent = ''; };
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch { return; }
      if (msg.type === 'state') applyState(msg);
      else if (msg.type === 'event') onEvent(msg.event);
      else if (msg.type === 'criteria') {
        live = { phase: msg.phase, elapsed_s: msg.elapsed_s, criteria: msg.criteria };
        renderCriteria(criteriaList, live);
        renderHeader();
      } else if (msg.type === 'lagged') ws.close(); // reconnect: the state message catches up
    };
    ws.onclose = () => {
      ws = null;
      if (closed || FINAL.has(run.status)) return;
      // Back off from 0.5 s to 10 s; the next `state` message replays what was missed.
      const delay = Math.min(10000, 500 * 2 ** retry++);
      connEl.textContent = `connection lost — reconnecting in ${Math.round(delay / 1000)} s`;
      retryTimer = setTimeout(connect, delay);
    };
  }
  stats.reconnect = () => ws && ws.close();

  async function control(what) {
    if (what === 'abort' && !window.confirm('Abort this run? The debrief will show the root cause.')) return;
    completeBtn.disabled = abortBtn.disabled = true;
    try {
      await api(`/api/runs/${runId}/${what}`, { method: 'POST', body: {} });
    } catch (e) {
      feedList.prepend(h('li', { class: 'bad' }, `${what} refused: ${e.message}`));
      renderHeader();
    }
  }

  function ended() {
    // Keep the last readings: they are the criteria's final state. After a reload there are
    // none live; the last criteria event of the run tells the final state.
    if (!live || !live.criteria || !live.criteria.length) {
      const last = [...events].reverse().find((e) => e.kind === 'criteria_met' || e.kind === 'criteria_broken');
      const units = Object.fromEntries(((scenario && scenario.success_criteria) || []).map((c) => [c.name, c.unit]));
      if (last) live = { criteria: last.data.criteria.map((c) => ({ name: c.name, expectation: '', for_s: c.held_s, unit: units[c.name], query: '', status: c })) };
    }
    renderCriteria(criteriaList, live);
    if (debriefShown || !tabList) return;
    debriefShown = true;
    if (ws) ws.close();
    tabList.select('debrief');
    for (const [k, p] of Object.entries(tabPanels)) p.hidden = k !== 'debrief';
    history.replaceState(null, '', `#/run/${runId}/debrief`);
    showDebrief();
  }

  async function showDebrief() {
    if (debriefLoaded || !run || !FINAL.has(run.status)) return;
    debriefLoaded = true;
    const panel = tabPanels.debrief;
    try {
      const d = await api(`/api/runs/${runId}/debrief`);
      mount(panel, debriefView(d));
    } catch (e) {
      debriefLoaded = false;
      mount(panel, h('div', { class: 'notice error' }, `The debrief is not ready: ${e.message}`));
    }
  }
}

function debriefView(d) {
  const t0 = d.fault_at_ms || (d.run && d.run.started_at_ms) || 0;
  const rel = (ms) => (t0 ? `${ms >= t0 ? '+' : '−'}${fmtClock(Math.abs(ms - t0) / 1000)}` : fmtTime(ms));
  // Empty setup records of the hidden channel (no releases shipped, no faults) say nothing.
  const shown = d.timeline.filter((e) => !(e.kind === 'fault' && e.data && e.data.setup
    && !Object.keys(e.data.releases || e.data.values || {}).length));
  const sc = d.scenario || {};
  const revealed = d.play && d.play !== 'guided' && sc.title ? h('div', { class: 'panel', id: 'revealed' },
    h('h3', {}, 'It was: ', h('span', { id: 'revealed-title' }, sc.title)),
    h('p', { class: 'small', style: 'margin:0' }, 'Reported as “', sc.symptom, '” · scenario ', h('span', { class: 'mono' }, sc.id),
      d.draw ? ` · drawn with seed ${d.draw.seed} among ${d.draw.pool}` : '')) : null;
  const score = d.score ? h('div', { class: 'panel', id: 'score' },
    h('h3', {}, 'Score: ', h('span', { id: 'score-total' }, `${d.score.total} / ${d.score.max}`)),
    h('table', {}, h('tbody', {}, d.score.breakdown.map((i) => h('tr', { 'data-item': i.item },
      h('td', { class: 'num' }, i.points > 0 ? `+${i.points}` : String(i.points)), h('td', {}, i.detail))))),
    d.worsening_actions && d.worsening_actions.length ? h('ul', { class: 'small' }, d.worsening_actions.map((w) =>
      h('li', {}, `${rel(w.time_ms)} ${describeAction(w.action)}: `, w.criteria.map((c) => `${c.name} went from ${fmtValue(c.before)} to ${fmtValue(c.after)}`).join('; ')))) : null) : null;
  return h('div', { class: 'debrief' },
    revealed, score,
    h('div', { class: 'panel' },
      h('h3', {}, 'Outcome: ', h('span', { class: `badge ${d.outcome}`, id: 'outcome' }, String(d.outcome).replace('_', ' '))),
      d.reason ? h('p', { style: 'margin:4px 0' }, d.reason) : null,
      h('div', { class: 'stats' },
        h('div', { class: 'stat' }, h('div', { class: 'v' }, fmtDuration(d.time_to_first_action_s)), h('div', { class: 'l' }, 'fault → your first action')),
        h('div', { class: 'stat' }, h('div', { class: 'v', id: 'ttm' }, fmtDuration(d.time_to_mitigate_s)), h('div', { class: 'l' }, 'time to mitigate (fault → criteria met)')))),
    h('div', { class: 'panel' }, h('h3', {}, 'Root cause'), h('p', { id: 'root-cause', style: 'margin:0' }, d.root_cause || '—'),
      d.reference_fix && d.reference_fix.length ? h('p', { class: 'small' }, h('strong', {}, 'Reference fix: '), d.reference_fix.map(describeAction).join('; ')) : null),
    h('div', { class: 'panel' }, h('h3', {}, 'Timeline (relative to the fault)'),
      h('table', { class: 'timeline' }, h('tbody', {}, shown.map((e) => {
        const item = feedItem(e);
        const d = e.data || {};
        let text;
        if (item) text = item.textContent.replace(/^\d\d:\d\d:\d\d/, '');
        else if (e.kind === 'action' && d.setup) text = `Setup: ${d.setup}${d.service ? ` of ${d.service}` : ''}${d.process ? ` ${d.process}` : ''}`;
        else if (e.kind === 'action') text = `Scenario: ${describeAction(d.action)}${d.ok === false ? ' (failed)' : ''}`;
        // What was hidden during the run: the releases the scenario shipped, the faults it set.
        else if (e.kind === 'fault' && d.setup === 'releases') text = Object.keys(d.releases || {}).length ? `Hidden: ${d.service} releases ${Object.entries(d.releases).map(([v, b]) => `${v} ${JSON.stringify(b)}`).join('; ')}` : null;
        else if (e.kind === 'fault' && d.setup === 'faults') text = Object.keys(d.values || {}).length ? `Hidden: ${d.service} faults ${JSON.stringify(d.values)}` : null;
        else if (e.kind === 'fault') text = `Hidden: ${describeAction(d.action)}`;
        else if (e.kind === 'criterion') text = `Criterion “${d.name}” ${d.met ? 'met' : d.passing ? 'passing' : 'failing'}${d.value !== null && d.value !== undefined ? ` (${Number(d.value.toPrecision(3))})` : ''}`;
        else text = e.kind;
        return h('tr', { 'data-kind': e.kind }, h('td', {}, rel(e.time_ms)), h('td', {}, text));
      })))),
    d.guide ? h('div', { class: 'panel guide', id: 'guide', html: markdown(d.guide) }) : null,
    h('p', {}, h('a', { href: '#/' }, '← Back to the scenarios')));
}

/* ---------------------------------------------------------------- User tab */

function userTab(ctx) {
  const statsEl = h('div', { class: 'stats', id: 'user-stats' }, h('span', { class: 'muted' }, 'Reading the load generator…'));
  const endpoints = h('tbody');
  const failures = h('tbody', { id: 'failures' });
  const root = h('div', {},
    h('div', { class: 'panel' }, h('div', { class: 'row' }, h('h3', { class: 'grow', style: 'margin:0' }, 'What users experience (last 10 s)'),
      ctx.lab.shop_url ? h('a', { href: ctx.lab.shop_url, target: '_blank', rel: 'noopener', id: 'shop-link' }, 'Open the shop page ↗') : null), statsEl),
    h('div', { class: 'grid2' },
      liveChart({
        title: 'Success rate', unit: 'ratio', yMax: 1,
        queries: [{ name: 'success rate', query: 'sum(rate(loadgen_requests_total{outcome="success"}[10s])) / sum(rate(loadgen_requests_total[10s]))' }],
      }),
      liveChart({
        title: 'Latency percentiles (from the intended send time; dots are exemplars: click for the trace)', unit: 's',
        queries: [0.5, 0.95, 0.99].map((q) => ({ name: `p${Math.round(q * 100)}`, query: `histogram_quantile(${q}, sum by (le) (rate(loadgen_request_duration_seconds_bucket[10s])))` })),
        exemplars: 'loadgen_request_duration_seconds_bucket', onExemplar: ctx.goToTrace,
      })),
    h('div', { class: 'panel' }, h('h3', {}, 'By page (last 60 s)'),
      h('table', {}, h('thead', {}, h('tr', {}, ['page', 'req/s', 'success', 'errors', 'timeouts', 'p50', 'p95', 'p99'].map((c, i) => h('th', { class: i ? 'num' : '' }, c)))), endpoints)),
    h('div', { class: 'panel' }, h('h3', {}, 'Recent failed requests'),
      h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'time'), h('th', {}, 'page'), h('th', {}, 'status'), h('th', {}, 'error'), h('th', { class: 'num' }, 'latency'))), failures)));
  const pct = (v) => (v === null || v === undefined ? '—' : `${(v * 100).toFixed(1)} %`);
  const ms = (v) => (v === null || v === undefined ? '—' : fmtValue(v / 1000, 's'));
  let busy = false;
  async function refresh() {
    if (busy || !root.isConnected) return;
    if (root.offsetParent === null) return;
    busy = true;
    try {
      const [st, fl] = await Promise.all([api('/api/lab/loadgen/stats'), api('/api/lab/loadgen/failures?limit=15')]);
      const o = st.windows['10s'].overall;
      mount(statsEl,
        [['success', pct(o.success_ratio), 'success-ratio'], ['p50', ms(o.p50_ms)], ['p95', ms(o.p95_ms), 'p95'], ['p99', ms(o.p99_ms)],
          ['requests/s', o.rate_per_s], ['errors + timeouts', o.error + o.timeout], ['dropped', o.dropped]]
          .map(([l, v, id]) => h('div', { class: 'stat' }, h('div', { class: 'v', id: id ? `stat-${id}` : null }, v), h('div', { class: 'l' }, l))));
      mount(endpoints, Object.entries(st.windows['60s'].endpoints).map(([name, e]) => h('tr', {},
        h('td', {}, name), h('td', { class: 'num' }, e.rate_per_s), h('td', { class: 'num' }, pct(e.success_ratio)),
        h('td', { class: 'num' }, e.error), h('td', { class: 'num' }, e.timeout),
        h('td', { class: 'num' }, ms(e.p50_ms)), h('td', { class: 'num' }, ms(e.p95_ms)), h('td', { class: 'num' }, ms(e.p99_ms)))));
      mount(failures, fl.failures.length ? fl.failures.map((f) => h('tr', {},
        h('td', { class: 'mono' }, fmtTime(f.time_ms)), h('td', {}, f.endpoint), h('td', {}, f.status ?? '—'),
        h('td', {}, f.error), h('td', { class: 'num' }, ms(f.latency_ms))))
        : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No failed request recently.')));
    } catch (e) {
      mount(statsEl, h('span', { class: 'error-text' }, `The load generator did not answer: ${e.message}`));
    } finally {
      busy = false;
    }
  }
  const timer = setInterval(() => { if (!root.isConnected) clearInterval(timer); else refresh(); }, 2000);
  requestAnimationFrame(refresh);
  return root;
}

route();
