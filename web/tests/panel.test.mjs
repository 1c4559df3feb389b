// The control panel end to end in a real browser, against a lab `scripts/browser-test.sh`
// started: launch cpu-regression, see the symptom on the User tab, survive a reload and a lost
// WebSocket, receive a hint and an Alertmanager alert, look at every Observability view, apply
// the reference fix through the Test tab form (after a refused value shown at its field), see
// the criteria turn green, complete, read the debrief; then play the same incident in investigate
// mode from its symptom card (nothing names the cause, a hint on request, a rollback, the score),
// and draw a challenge by seed. Prints the measurements (first renders, chart update rate).

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import http from 'node:http';
import assert from 'node:assert/strict';

const URL = process.env.PANEL_URL || 'http://127.0.0.1:8080';
const SHOTS = process.env.SCREENSHOTS !== '0';
const SHOT_DIR = process.env.SCREENSHOT_DIR || 'screenshots';
if (SHOTS) mkdirSync(SHOT_DIR, { recursive: true });

const started = Date.now();
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${msg}`);

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
const page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
const problems = [];
// The one refused request the test makes on purpose logs a 400 in the console; nothing else may.
let expect400 = false;
page.on('console', (m) => {
  if (m.type() !== 'error') return;
  if (expect400 && /status of 400/.test(m.text())) return;
  problems.push(`console: ${m.text()}`);
});
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
const figures = {};
let runId = null;

async function shot(name) {
  if (SHOTS) await page.screenshot({ path: `${SHOT_DIR}/${name}.png` });
}

/** Time from navigation start to the panel's own first-render mark, and to the load event. */
async function firstRender(markName) {
  await page.waitForFunction((n) => window.__panel && window.__panel.marks[n] !== undefined, markName);
  return page.evaluate((n) => ({
    render_ms: Math.round(window.__panel.marks[n]),
    load_event_ms: Math.round(performance.getEntriesByType('navigation')[0].loadEventEnd),
  }), markName);
}

try {
  // Catalogue.
  await page.goto(`${URL}/?time_scale=2#/`);
  figures.catalogue = await firstRender('catalogue');
  const card = page.locator('[data-scenario="cpu-regression"]');
  await card.waitFor();
  const library = await page.evaluate(() => fetch('/api/scenarios').then((r) => r.json()));
  const total = (library.scenarios || library).length;
  assert.equal(await page.locator('[data-scenario]').count(), total, `the catalogue lists the ${total} scenarios`);
  await page.fill('#search', 'CPU regression after a deploy');
  assert.equal(await page.locator('[data-scenario]').count(), 1, 'search filters the catalogue');
  await page.fill('#search', '');
  log(`catalogue rendered in ${figures.catalogue.render_ms} ms`);
  await shot('catalogue');

  // Launch.
  await card.locator('button[data-launch]').click();
  await page.waitForURL(/#\/run\//);
  runId = /#\/run\/([^/]+)/.exec(page.url())[1];
  log(`run ${runId} started`);
  await page.waitForSelector('#criteria [data-criterion]');

  // A reload lands on the same run; its first render is measured here.
  await page.reload();
  figures.run = await firstRender('run');
  await page.waitForSelector('#criteria [data-criterion]');
  assert.match(await page.locator('header .title').innerText(), /CPU regression/);
  log(`run view rendered in ${figures.run.render_ms} ms after a reload`);

  // The symptom: report generation slows down for users. Wait for the bad release's notice
  // first: a cold lab's first requests can be slow before the fault, and would count.
  await page.waitForFunction(() => /orders 1\.5\.0 rolled out/.test(document.querySelector('#feed')?.textContent || ''),
    null, { timeout: 120_000, polling: 500 });
  log('the bad release is out');
  await page.waitForFunction(() => {
    const row = [...document.querySelectorAll('tbody tr')].find((r) => r.firstChild && r.firstChild.textContent === 'process');
    if (!row) return false;
    const p95 = row.children[6].textContent;
    // Above the 25 ms the success criterion allows (v2 takes 50-90 ms, v1 1-2 ms).
    return / s$/.test(p95) || parseFloat(p95) >= 25;
  }, null, { timeout: 120_000, polling: 500 });
  await page.waitForSelector('#criteria [data-state="failing"]', { timeout: 60_000 });
  log('symptom on the User tab: the process page is slow and a criterion fails');

  // A page on another origin, served here, sends the "simple" cross-origin requests (text/plain
  // or no body, no preflight) a page the learner opens elsewhere could: start a run, abort this
  // one, stop or pause a process, pause the users. None may take effect.
  const labInfo = await (await fetch(`${URL}/api/lab`)).json();
  const attacker = http.createServer((_, res) => { res.setHeader('content-type', 'text/html'); res.end('<!doctype html><title>elsewhere</title><p>nothing to see</p>'); });
  await new Promise((r) => attacker.listen(0, '127.0.0.1', r));
  const elsewhere = await browser.newPage();
  await elsewhere.goto(`http://localhost:${attacker.address().port}/`);
  const sent = await elsewhere.evaluate(async ({ panel, agent, loadgen, run }) => {
    const plain = (body) => ({ method: 'POST', headers: { 'content-type': 'text/plain' }, body: JSON.stringify(body) });
    const tries = [
      [`${panel}/api/runs`, plain({ scenario: 'crash-loop' })],
      [`${panel}/api/runs/${run}/abort`, { method: 'POST' }],
      [`${panel}/api/lab/action`, plain({ kind: 'process', name: 'orders', command: 'stop' })],
      [`${agent}/processes/orders/signal`, plain({ signal: 'STOP' })],
      [`${agent}/processes/worker/stop`, { method: 'POST' }],
      [`${loadgen}/load/pause`, { method: 'POST' }],
    ];
    let n = 0;
    for (const [url, init] of tries) {
      try { await fetch(url, { ...init, mode: 'no-cors' }); n += 1; } catch { /* a refused connection counts as not sent */ }
    }
    return n;
  }, { panel: URL, agent: labInfo.endpoints.agent, loadgen: labInfo.endpoints.loadgen, run: runId });
  await elsewhere.close();
  attacker.close();
  assert.equal(sent, 6, 'the foreign page sent its six requests');
  const afterAttack = await (await fetch(`${URL}/api/runs/${runId}`)).json();
  assert.equal(afterAttack.run.status, 'running', 'the run was not aborted');
  assert.ok(!afterAttack.events.some((e) => e.kind === 'learner_action'), 'no action was recorded');
  const procs = await (await fetch(`${labInfo.endpoints.agent}/processes`)).json();
  for (const p of procs.processes) assert.equal(p.state, 'running', `${p.name} is still running`);
  const load = await (await fetch(`${labInfo.endpoints.loadgen}/load`)).json();
  assert.notEqual(load.plan?.paused ?? load.paused, true, 'the users were not paused');
  const runs = await (await fetch(`${URL}/api/runs`)).json();
  assert.equal(runs.active, runId, 'no other run was started');
  log('a page on another origin could not drive the lab');

  // Chart update rate on the User tab, and frames longer than 50 ms meanwhile.
  figures.charts = await page.evaluate(async () => {
    const before = window.__panel.chartRenders;
    const frames = [];
    let last = performance.now();
    let running = true;
    const loop = (t) => { frames.push(t - last); last = t; if (running) requestAnimationFrame(loop); };
    requestAnimationFrame(loop);
    await new Promise((r) => setTimeout(r, 5000));
    running = false;
    const charts = [...document.querySelectorAll('.chart')].filter((c) => c.offsetParent !== null).length;
    return {
      visible_charts: charts,
      updates_per_chart_per_s: Number(((window.__panel.chartRenders - before) / charts / 5).toFixed(2)),
      frames: frames.length,
      long_frames_over_50ms: frames.filter((d) => d > 50).length,
    };
  });
  log(`charts: ${JSON.stringify(figures.charts)}`);
  await shot('user-tab');

  // A lost WebSocket reconnects and catches up.
  await page.evaluate(() => window.__panel.reconnect());
  await page.waitForFunction(() => document.querySelector('header .conn').textContent.includes('reconnecting'));
  await page.waitForFunction(() => document.querySelector('header .conn').textContent === '', null, { timeout: 15_000 });
  log('the WebSocket reconnected');

  // A hint arrives over the WebSocket.
  await page.waitForSelector('#feed li[data-kind="hint"]', { timeout: 180_000 });
  log(`hint: ${(await page.locator('#feed li[data-kind="hint"]').first().innerText()).slice(0, 80)}…`);

  // An alert from Alertmanager's webhook shows in the feed with its name, severity and
  // summary, firing then resolved; a repeated notification adds no line.
  const startsAt = new Date().toISOString();
  const notification = (status) => ({
    version: '4', status, receiver: 'orchestrator', groupLabels: { alertname: 'LatencyBudgetBurnFast' },
    alerts: [{
      status, startsAt, fingerprint: 'browser-test-latency',
      endsAt: status === 'resolved' ? new Date().toISOString() : '0001-01-01T00:00:00Z',
      labels: { alertname: 'LatencyBudgetBurnFast', severity: 'critical', service: 'loadgen' },
      annotations: { summary: 'Users\' latency budget is burning fast' },
    }],
  });
  const postAlert = (body) => page.evaluate((b) => fetch('/api/alerts', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(b),
  }).then((r) => r.json()), body);
  const alertShown = (status) => page.waitForFunction((s) => [...document.querySelectorAll('#feed li[data-kind="alert"]')]
    .some((li) => li.classList.contains(s) && /LatencyBudgetBurnFast \(critical\) — Users' latency budget is burning fast/.test(li.textContent)),
  status, { timeout: 15_000 });
  assert.equal((await postAlert(notification('firing'))).recorded, 1, 'the firing alert is recorded');
  await alertShown('firing');
  assert.equal((await postAlert(notification('firing'))).duplicates, 1, 'a repeated notification is a duplicate');
  assert.equal((await postAlert(notification('resolved'))).recorded, 1, 'the resolved alert is recorded');
  await alertShown('resolved');
  assert.equal(await page.locator('#feed li[data-kind="alert"]').count(), 2, 'one line each for firing and resolved');
  log(`alert in the feed: ${await page.locator('#feed li[data-kind="alert"].firing').innerText()}`);

  // Observability: dashboards, PromQL, logs, traces (keyboard: arrow keys move between tabs).
  await page.click('#tab-obs');
  await page.waitForFunction(() => [...document.querySelectorAll('.chart svg path')].filter((p) => p.getAttribute('d')).length > 5, null, { timeout: 30_000 });
  await shot('observability-dashboards');
  await page.click('#tab-obs-explore');
  await page.fill('#promql', 'sum by (version) (rate(http_server_requests_total{service="orders"}[1m]))');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => /series/.test(document.querySelector('#promql').closest('.panel').querySelector('[role=status]').textContent));
  await shot('observability-explore');
  await page.focus('#tab-obs-explore');
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.getAttribute('#tab-obs-logs', 'aria-selected'), 'true', 'arrow keys move between tabs');
  await page.waitForSelector('#log-lines .line', { timeout: 30_000 });
  await shot('observability-logs');
  const traceLink = page.locator('#log-lines button[data-trace]').first();
  if (await traceLink.count()) {
    await traceLink.click();
  } else {
    await page.click('#tab-obs-traces');
    await page.locator('#trace-list button').first().click();
  }
  await page.waitForSelector('.waterfall .span', { timeout: 30_000 });
  await page.locator('.waterfall .span').first().click();
  await page.waitForSelector('#span-detail dl');
  log('a trace opened from a log line, with its waterfall and span details');
  await shot('observability-traces');

  // A latency exemplar on the User tab opens its trace.
  await page.click('#tab-user');
  await page.waitForSelector('circle.ex', { timeout: 30_000 });
  let opened = false;
  for (let i = 0; i < 5 && !opened; i++) {
    const id = await page.evaluate((k) => {
      const dots = [...document.querySelectorAll('circle.ex')];
      const dot = dots[Math.min(k, dots.length - 1)];
      dot.dispatchEvent(new MouseEvent('click', { bubbles: true }));
      return dot.dataset.traceId;
    }, i);
    await page.waitForFunction((t) => document.querySelector('#trace-detail').textContent.includes(t)
      && !document.querySelector('#trace-detail').textContent.startsWith('Loading'), id);
    opened = (await page.locator('#trace-detail .waterfall').count()) > 0;
  }
  assert.ok(opened, 'an exemplar opens its trace');
  log('a latency exemplar opened its trace');

  // Test tab: a refused value is shown at its field; then the reference fix.
  await page.click('#tab-test');
  await page.waitForSelector('#cfg-orders-version');
  // The form holds operational knobs only: the release's behaviour is not there to read.
  const form = await page.locator('section[data-service="orders"]').innerText();
  for (const hidden of ['algorithm', 'quadratic', 'v2']) assert.ok(!form.includes(hidden), `the orders form mentions ${hidden}`);
  await page.fill('#cfg-orders-concurrency_limit', '0');
  expect400 = true;
  await page.click('#apply-orders');
  await page.waitForFunction(() => document.querySelector('#cfg-orders-concurrency_limit-msg').textContent.length > 0);
  expect400 = false;
  const refusal = await page.locator('#cfg-orders-concurrency_limit-msg').innerText();
  assert.match(refusal, /concurrency_limit/, 'the server message names the field');
  log(`refused at the field: ${refusal}`);
  await page.locator('section[data-service="orders"] button', { hasText: 'Discard changes' }).click();
  assert.equal(await page.inputValue('#cfg-orders-concurrency_limit'), '64', 'discard restores the current value');
  // The operator's fix: roll back to the release before the deploy.
  await page.selectOption('#cfg-orders-version', '1.4.0');
  await page.click('#apply-orders');
  await page.waitForSelector('section[data-service="orders"] .result.ok-text');
  await page.waitForSelector('#feed li[data-kind="learner_action"]');
  log('reference fix applied through the Test tab');
  await shot('test-tab');

  // The criteria turn green (the run resolves itself once they have held).
  await page.waitForFunction(() => {
    const items = [...document.querySelectorAll('#criteria [data-criterion]')];
    return (items.length && items.every((c) => c.dataset.state === 'met')) || document.querySelector('#outcome');
  }, null, { timeout: 180_000, polling: 250 });
  await page.waitForFunction(() => {
    const items = [...document.querySelectorAll('#criteria [data-criterion]')];
    return items.length === 2 && items.every((c) => c.dataset.state === 'met');
  }, null, { timeout: 30_000 });
  log('the criteria are met (green in the sidebar)');
  // Every criterion held for its window: the orchestrator resolves the run by itself.

  // The debrief.
  await page.waitForSelector('#outcome', { timeout: 60_000 });
  assert.equal(await page.locator('#outcome').innerText(), 'resolved');
  assert.match(await page.locator('#root-cause').innerText(), /quadratic|O\(n²\)|v2/);
  await page.waitForSelector('#guide h1, #guide h2');
  log(`debrief: resolved, time to mitigate ${await page.locator('#ttm').innerText()}`);
  await shot('debrief');

  // A reload of an ended run shows the debrief and the final criteria.
  await page.reload();
  await page.waitForSelector('#outcome');
  assert.equal(await page.locator('#criteria [data-state="met"]').count(), 2);

  // The catalogue now shows the outcome.
  await page.goto(`${URL}/#/`);
  await page.waitForSelector('[data-scenario="cpu-regression"] .badge.resolved');

  // Complete: a learner who completes before the incident is fixed gets a failed debrief.
  await page.locator('[data-scenario="worker-pool-saturation"] button[data-launch]').click();
  await page.waitForURL(/#\/run\//);
  await page.waitForSelector('#criteria [data-criterion]', { timeout: 60_000 });
  await page.click('#complete');
  await page.waitForSelector('#outcome', { timeout: 30_000 });
  assert.equal(await page.locator('#outcome').innerText(), 'failed');
  log(`Complete ended the second run: ${await page.locator('.debrief p').first().innerText()}`);

  // Investigate: from a symptom card to the debrief. While the run is on, the page names
  // neither the scenario nor its mechanism; the learner asks for a hint; an operator's rollback
  // resolves it; the debrief reveals the cause and the score.
  await page.goto(`${URL}/?time_scale=2#/investigate`);
  await page.waitForSelector('[data-incident]');
  assert.equal(await page.locator('[data-incident]').count(), total, 'a symptom card per incident');
  const secrets = ['cpu-regression', 'cpu regression', 'regression', 'quadratic', 'algorithm', 'linear search'];
  const named = async (except = '') => {
    const text = (await page.evaluate((sel) => {
      const clone = document.body.cloneNode(true);
      if (sel) clone.querySelectorAll(sel).forEach((n) => n.remove());
      return clone.innerText;
    }, except)).toLowerCase();
    return secrets.filter((w) => text.includes(w));
  };
  assert.deepEqual(await named(), [], 'the symptom cards name no cause');
  await page.locator('[data-incident]', { hasText: 'Reports take seconds' }).locator('button[data-launch]').click();
  await page.waitForURL(/#\/run\//);
  runId = /#\/run\/([^/]+)/.exec(page.url())[1];
  await page.waitForSelector('#criteria [data-criterion]');
  assert.match(await page.locator('header .title').innerText(), /Reports take seconds/);
  await page.waitForFunction(() => /orders 1\.5\.0 rolled out/.test(document.querySelector('#feed')?.textContent || ''),
    null, { timeout: 120_000, polling: 500 });
  await page.waitForSelector('#criteria [data-state="failing"]', { timeout: 60_000 });
  for (const tab of ['user', 'obs', 'test']) {
    await page.click(`#tab-${tab}`);
    await page.waitForTimeout(500);
    assert.deepEqual(await named(), [], `the ${tab} tab names no cause during the run`);
  }
  assert.equal(await page.locator('#feed li[data-kind="hint"]').count(), 0, 'no hint on a timer');
  await page.click('#ask-hint');
  await page.waitForSelector('#feed li[data-kind="hint"]', { timeout: 15_000 });
  await page.waitForFunction(() => /2 left/.test(document.querySelector('#ask-hint').textContent));
  log(`investigate: asked for a hint: ${(await page.locator('#feed li[data-kind="hint"]').innerText()).slice(0, 60)}…`);
  // The operator's move: the slowdown began with the release, so roll it back.
  await page.click('#tab-test');
  await page.waitForSelector('#cfg-orders-version');
  await page.selectOption('#cfg-orders-version', '1.4.0');
  await page.click('#apply-orders');
  await page.waitForSelector('section[data-service="orders"] .result.ok-text');
  await page.waitForSelector('#outcome', { timeout: 180_000 });
  assert.equal(await page.locator('#outcome').innerText(), 'resolved');
  assert.match(await page.locator('#revealed-title').innerText(), /CPU regression/);
  assert.match(await page.locator('#score-total').innerText(), /^\d+ \/ 100$/);
  assert.match(await page.locator('#score tr[data-item="hints"]').innerText(), /−?-10/);
  assert.match(await page.locator('#score tr[data-item="resolved"]').innerText(), /\+60/);
  log(`investigate: resolved, score ${await page.locator('#score-total').innerText()}`);
  await shot('investigate-debrief');

  // Challenge: a draw by seed starts a run that shows its symptom and the seed; aborted, its
  // debrief reveals what it was.
  await page.goto(`${URL}/#/challenge`);
  await page.waitForSelector('#draw');
  await page.fill('#challenge-seed', '7');
  await page.selectOption('#challenge-difficulty', '1');
  await page.click('#draw');
  await page.waitForURL(/#\/run\//);
  runId = /#\/run\/([^/]+)/.exec(page.url())[1];
  await page.waitForSelector('#feed li[data-kind="draw"]');
  assert.match(await page.locator('#feed li[data-kind="draw"]').innerText(), /seed 7/);
  const drawn = await page.evaluate((id) => fetch(`/api/runs/${id}`).then((r) => r.json()), runId);
  assert.equal(drawn.run.scenario_id, undefined, 'a challenge run hides its scenario');
  page.once('dialog', (d) => d.accept());
  await page.click('#abort');
  await page.waitForSelector('#revealed-title', { timeout: 30_000 });
  log(`challenge: seed 7 drew “${await page.locator('#revealed-title').innerText()}”`);

  const assets = await page.evaluate(() => fetch('/api/lab').then((r) => r.json()).then((l) => l.assets_bytes));
  figures.assets_bytes = assets;
  assert.deepEqual(problems, [], 'no console errors');
  console.log(`FIGURES ${JSON.stringify(figures)}`);
  log('PASS');
} catch (e) {
  await page.screenshot({ path: '/tmp/observastack-panel-failure.png' }).catch(() => {});
  console.error(`FAIL: ${e.stack || e}\nconsole problems: ${JSON.stringify(problems, null, 1)}\nscreenshot: /tmp/observastack-panel-failure.png`);
  // What the orchestrator knew of the run: its status, criteria and latest events.
  if (runId) {
    try {
      const run = await (await fetch(`${URL}/api/runs/${runId}`)).json();
      const { events, ...rest } = run;
      const brief = { ...rest, events: (events || []).slice(-15) };
      console.error(`run ${runId}: ${JSON.stringify(brief, null, 1)}`);
    } catch (err) {
      console.error(`run ${runId}: could not be read (${err.message})`);
    }
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
