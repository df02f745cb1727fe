// The administrators' dashboard: queue counts live, pause/resume, jobs, dead letters, processes, charts.
import {
  $, api, ApiError, button, clampPercent, el, fmtBytes, fmtClock, fmtDateTime, fmtMs, isNum, logout, notify,
  say, showConnection, showLogin, showUser, bootPage,
} from './common.js';
import { perMinuteChart } from './charts.js';
import { eventRow } from './events.js';
import { FINAL_STATES, LiveSocket, stateAfter } from './live.js';

const STATES = ['queued', 'running', 'delayed', 'completed', 'dead', 'cancelled'];
const STATE_LABELS = { delayed: 'delayed (retrying)', dead: 'dead' };
const STATS_EVERY_MS = 5000;
const PROCESSES_EVERY_MS = 3000;
const MAX_EVENTS = 100;
const ROLE_ORDER = { primary: 0, web: 1, executor: 2, ffmpeg: 3 };

const dash = {
  user: null,
  live: null,
  states: new Map(), // jobId -> last known state, to move the counts live
  counts: Object.fromEntries(STATES.map((s) => [s, 0])),
  timers: [],
  statsSoon: null,
  jobsSoon: null,
  deadSoon: null,
  jobRows: new Map(), // jobId -> <tr>
  deadItems: new Map(), // jobId -> <li>
  filter: { state: '', type: '', videoId: '', limit: '100' },
};

// ---------- session ----------

function start(user) {
  dash.user = user;
  showUser(user, onLogout);
  $('dashboard-link').hidden = false;
  if (!user.admin) {
    $('admin-only-name').textContent = user.name;
    $('admin-only').hidden = false;
    $('dash').hidden = true;
    return;
  }
  $('admin-only').hidden = true;
  $('dash').hidden = false;
  dash.live = new LiveSocket({
    onEvent,
    onControl: (msg) => { if (msg.type === 'error') notify($('messages'), `Live updates: ${msg.error}`, 'error'); },
    onState: (state, detail) => showConnection($('conn-state'), state, detail),
    onOpen: ({ reconnect }) => { if (reconnect) refreshAll(); },
    onUnauthorized: () => sessionEnded(),
  });
  dash.live.start();
  loadKinds();
  refreshAll();
  refreshProcesses();
  dash.timers.push(setInterval(refreshStats, STATS_EVERY_MS), setInterval(refreshProcesses, PROCESSES_EVERY_MS));
}

/** The type filter offers every kind the cluster runs (GET /api/kinds, from cluster/kinds/). */
async function loadKinds() {
  try {
    const kinds = await api('GET', '/api/kinds');
    const select = $('filter-type');
    const chosen = select.value;
    select.length = 1; // "any"
    for (const kind of kinds) select.append(new Option(kind.type, kind.type, false, kind.type === chosen));
  } catch { /* the built-in list stays */ }
}

function refreshAll() {
  refreshStats();
  loadJobs();
  loadDeadLetter();
}

function stop() {
  if (dash.live) dash.live.stop();
  dash.timers.forEach(clearInterval);
  dash.timers = [];
  dash.user = null;
  $('admin-only').hidden = true;
  showUser(null, onLogout);
}

async function onLogout() {
  stop();
  await logout();
  showLogin($('dash'));
  notify($('messages'), 'You are logged out.', 'ok');
}

function sessionEnded() {
  if (!dash.user) return;
  stop();
  showLogin($('dash'), 'Your session has ended: please log in again.');
}

/** 401 ends the session; anything else is shown in `where` (or as a notice). */
function failed(error, where, prefix) {
  if (error instanceof ApiError && error.status === 401) {
    sessionEnded();
    return;
  }
  if (where) say(where, `${prefix}: ${error.message}`, 'error');
  else notify($('messages'), `${prefix}: ${error.message}`, 'error');
}

function soon(key, fn, ms) {
  clearTimeout(dash[key]);
  dash[key] = setTimeout(fn, ms);
}

// ---------- live events ----------

/** The state a job most likely left, when this page has not seen it before. */
function previousGuess(name, d) {
  switch (name) {
    case 'job:started': return 'queued';
    case 'job:queued': return isNum(d.attempt) && d.attempt > 0 ? 'delayed' : null;
    case 'job:cancelled': return null;
    default: return 'running';
  }
}

function onEvent(msg) {
  const d = msg.data && typeof msg.data === 'object' ? msg.data : {};
  logEvent(msg);
  if (msg.event === 'queue:paused' || msg.event === 'queue:resumed') {
    if (typeof d.type === 'string') showTypePaused(d.type, msg.event === 'queue:paused');
    else showPaused(msg.event === 'queue:paused');
    return;
  }
  const next = stateAfter(msg.event);
  if (!d.jobId || !next) return;
  const jobId = String(d.jobId);
  const previous = dash.states.has(jobId) ? dash.states.get(jobId) : previousGuess(msg.event, d);
  if (previous !== next) {
    if (previous) dash.counts[previous] = Math.max(0, (dash.counts[previous] || 0) - 1);
    dash.counts[next] = (dash.counts[next] || 0) + 1;
    renderCounts();
  }
  dash.states.set(jobId, next);
  updateJobRow(jobId, next, msg.event, d);
  updateDeadItem(jobId, next);
  if (msg.event === 'job:permanent-failure') soon('deadSoon', loadDeadLetter, 400);
  soon('statsSoon', refreshStats, 1500); // the counts from the store, once a burst is over
}

function logEvent(msg) {
  const log = $('event-log');
  log.prepend(eventRow(msg));
  while (log.children.length > MAX_EVENTS) log.lastElementChild.remove();
  $('event-log-empty').hidden = true;
}

// ---------- the queue: counts, stats, pause ----------

async function refreshStats() {
  try {
    const stats = await api('GET', '/api/queue/stats');
    for (const state of STATES) dash.counts[state] = stats.byState[state] || 0;
    renderCounts();
    renderStats(stats);
    showPaused(stats.paused);
    drawCharts(stats);
    renderTypes((await api('GET', '/api/queue/types')).types);
    $('stats-updated').textContent = `Figures from the store at ${fmtClock(Date.now())}; counts move live in between.`;
  } catch (e) {
    failed(e, null, 'Cannot load the queue statistics');
  }
}

function renderCounts() {
  const box = $('counts');
  for (const state of STATES) {
    let item = box.querySelector(`.count[data-state="${state}"]`);
    if (!item) {
      item = el('div', 'count');
      item.dataset.state = state;
      item.append(el('span', 'label', STATE_LABELS[state] || state), el('span', 'value'));
      box.append(item);
    }
    item.querySelector('.value').textContent = String(dash.counts[state] || 0);
  }
}

function renderStats(stats) {
  const rate = isNum(stats.successRate) ? `${(stats.successRate * 100).toFixed(1)}%` : '—';
  const rows = [
    ['Running now', stats.running],
    ['Waiting in the queue', stats.queueLength],
    ['Wait, mean', fmtMs(stats.waitMs && stats.waitMs.mean)],
    ['Wait, p95', fmtMs(stats.waitMs && stats.waitMs.p95)],
    ['Run, mean', fmtMs(stats.runMs && stats.runMs.mean)],
    ['Run, p95', fmtMs(stats.runMs && stats.runMs.p95)],
    ['Attempts, last hour', stats.waitMs ? stats.waitMs.count : '—'],
    ['Success rate', rate],
  ];
  const dl = $('stats');
  dl.textContent = '';
  for (const [term, value] of rows) {
    const pair = el('div');
    pair.append(el('dt', '', term), el('dd', '', value === undefined || value === null ? '—' : value));
    dl.append(pair);
  }
}

function showPaused(paused) {
  const badge = $('queue-state');
  badge.textContent = paused ? 'paused' : 'running';
  badge.dataset.paused = String(Boolean(paused));
  $('queue-pause').disabled = Boolean(paused);
  $('queue-resume').disabled = !paused;
}

async function setPaused(paused) {
  const control = $(paused ? 'queue-pause' : 'queue-resume');
  control.disabled = true;
  try {
    const answer = await api('POST', paused ? '/api/queue/pause' : '/api/queue/resume');
    showPaused(answer.paused);
    notify($('messages'), answer.paused ? 'The queue is paused: running jobs finish, queued ones wait.'
      : 'The queue is running again.', 'ok');
  } catch (e) {
    control.disabled = false;
    failed(e, null, paused ? 'Could not pause the queue' : 'Could not resume the queue');
  }
}

// ---------- a queue per job type ----------

const TYPE_COLUMNS = ['waiting', 'running', 'completed', 'failed'];

function renderTypes(types) {
  const body = $('queue-types').querySelector('tbody');
  const seen = new Set();
  for (const stats of types) {
    seen.add(stats.type);
    let row = body.querySelector(`tr[data-type="${CSS.escape(stats.type)}"]`);
    if (!row) row = body.appendChild(typeRow(stats.type));
    for (const column of TYPE_COLUMNS) row.querySelector(`[data-column="${column}"]`).textContent = String(stats[column]);
    row.querySelector('[data-column="concurrency"]').textContent = isNum(stats.concurrency) ? String(stats.concurrency) : 'no limit';
    showTypePaused(stats.type, stats.paused);
  }
  for (const row of [...body.rows]) if (!seen.has(row.dataset.type)) row.remove();
}

function typeRow(type) {
  const row = el('tr');
  row.dataset.type = type;
  row.append(el('th', '', type));
  row.firstChild.scope = 'row';
  for (const column of TYPE_COLUMNS) {
    const cell = el('td', 'num');
    cell.dataset.column = column;
    row.append(cell);
  }
  const state = el('td');
  state.append(el('span', 'badge type-state'));
  const limit = el('td', 'num');
  limit.dataset.column = 'concurrency';
  const actions = el('td');
  actions.append(typeButton(type, true), typeButton(type, false));
  row.append(state, limit, actions);
  return row;
}

function typeButton(type, pause) {
  const control = button(pause ? 'Pause' : 'Resume', `secondary small ${pause ? 'pause-type' : 'resume-type'}`,
    () => setTypePaused(type, pause));
  control.dataset.type = type;
  control.setAttribute('aria-label', `${pause ? 'Pause' : 'Resume'} the ${type} queue`);
  return control;
}

function showTypePaused(type, paused) {
  const row = $('queue-types').querySelector(`tr[data-type="${CSS.escape(type)}"]`);
  if (!row) return;
  row.dataset.paused = String(Boolean(paused));
  const badge = row.querySelector('.type-state');
  badge.textContent = paused ? 'paused' : 'running';
  badge.dataset.paused = String(Boolean(paused));
  row.querySelector('.pause-type').disabled = Boolean(paused);
  row.querySelector('.resume-type').disabled = !paused;
}

async function setTypePaused(type, pause) {
  try {
    const answer = await api('POST', `/api/queue/${encodeURIComponent(type)}/${pause ? 'pause' : 'resume'}`);
    showTypePaused(type, answer.paused);
    notify($('messages'), answer.paused ? `The ${type} queue is paused: its running jobs finish, the others run on.`
      : `The ${type} queue is running again.`, 'ok');
  } catch (e) {
    failed(e, null, pause ? `Could not pause the ${type} queue` : `Could not resume the ${type} queue`);
  }
}

// ---------- charts ----------

function drawCharts(stats) {
  dash.lastStats = stats;
  dash.chartWidth = Math.round($('chart-jobs').clientWidth);
  const width = Math.max(260, dash.chartWidth || 600); // drawn at 1:1, so the text stays legible
  const jobs = stats.jobsPerMinute || [];
  const runs = stats.meanRunMsPerMinute || [];
  const total = jobs.reduce((a, b) => a + (b || 0), 0);
  const runValues = runs.filter(isNum);
  const jobsLabel = `Jobs completed per minute over the last hour: ${total} in all, `
    + `at most ${Math.max(0, ...jobs)} in a minute.`;
  const runLabel = runValues.length
    ? `Mean run time per minute over the last hour: from ${fmtMs(Math.min(...runValues))} `
      + `to ${fmtMs(Math.max(...runValues))}.`
    : 'Mean run time per minute over the last hour: no attempt ran.';
  $('chart-jobs').replaceChildren(perMinuteChart(jobs, {
    kind: 'bars', format: (v) => String(Math.round(v * 10) / 10), label: jobsLabel, className: 'chart-jobs', width,
  }));
  $('chart-runtime').replaceChildren(perMinuteChart(runs, { kind: 'line', axisFormat: durationAxis, label: runLabel,
    className: 'chart-runtime', width }));
}

/** One unit for every label of a duration axis, chosen by its top value: ms, s or min. */
function durationAxis(top) {
  if (top >= 120_000) return (v) => `${Math.round(v / 6000) / 10} min`;
  if (top >= 1000) return (v) => `${Math.round(v / 100) / 10} s`;
  return (v) => `${Math.round(v)} ms`;
}

// ---------- the jobs table ----------

function jobParams(job) {
  const p = job.params || {};
  if (job.type === 'resize' && isNum(p.width)) return `${p.width}×${p.height}`;
  if (job.type === 'convert' && p.format) return `→ ${p.format}`;
  if (job.type === 'hls' && Array.isArray(p.renditions)) return p.renditions.map((h) => `${h}p`).join(', ');
  return '';
}

async function loadJobs() {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(dash.filter)) if (value) query.set(key, value);
  const message = $('jobs-message');
  try {
    const jobs = await api('GET', `/api/jobs?${query}`);
    say(message, '');
    renderJobs(jobs);
  } catch (e) {
    failed(e, message, 'Cannot load the jobs');
  }
}

function renderJobs(jobs) {
  const body = $('jobs-table').querySelector('tbody');
  body.textContent = '';
  dash.jobRows.clear();
  for (const job of jobs) {
    dash.states.set(job.jobId, job.state);
    const row = jobRow(job);
    dash.jobRows.set(job.jobId, row);
    body.append(row);
  }
  $('jobs-empty').hidden = jobs.length > 0;
}

function jobRow(job) {
  const row = el('tr', 'job-row');
  row.dataset.jobId = job.jobId;
  const idCell = el('td');
  idCell.append(el('span', 'mono', job.jobId));
  const typeCell = el('td', '', job.type);
  const params = jobParams(job);
  if (params) typeCell.append(el('div', 'muted', params));
  const videoCell = el('td');
  videoCell.append(el('span', 'mono', job.videoId));
  const stateCell = el('td');
  stateCell.append(el('span', 'badge state-badge job-state'));
  const progressCell = el('td');
  const bar = el('progress');
  bar.max = 100;
  bar.setAttribute('aria-label', `Progress of ${job.jobId}`);
  progressCell.append(bar, el('span', 'job-pct'));
  const attempts = el('td', 'num job-attempts');
  const actions = el('td', 'row-actions');
  row.append(idCell, typeCell, videoCell, stateCell, progressCell, attempts, el('td', '', job.priority),
    el('td', '', fmtDateTime(job.createdAt)), actions);
  row.job = job;
  paintJobRow(row);
  return row;
}

function paintJobRow(row) {
  const { job } = row;
  row.dataset.state = job.state;
  row.querySelector('.job-state').textContent = job.state;
  row.querySelector('progress').value = clampPercent(job.progress);
  row.querySelector('.job-pct').textContent = ` ${Math.round(clampPercent(job.progress))}%`;
  const max = isNum(job.maxRetries) ? job.maxRetries + 1 : '?';
  row.querySelector('.job-attempts').textContent = `${job.attempts || 0} / ${max}`;
  const actions = row.querySelector('.row-actions');
  actions.textContent = '';
  if (!FINAL_STATES.has(job.state)) {
    actions.append(jobButton('Cancel', 'cancel-job', job.jobId, () => cancelJob(job.jobId, $('jobs-message'))));
  }
  if (job.state === 'dead' || job.state === 'cancelled') {
    actions.append(jobButton('Retry', 'retry-job', job.jobId, () => retryJob(job.jobId, $('jobs-message'))));
  }
}

function jobButton(text, className, jobId, onClick) {
  const b = button(text, `secondary small ${className}`, onClick);
  b.dataset.jobId = jobId;
  b.setAttribute('aria-label', `${text} job ${jobId}`);
  return b;
}

function matchesFilter(d) {
  const f = dash.filter;
  return (!f.state || f.state === 'queued') && (!f.type || f.type === d.type)
    && (!f.videoId || f.videoId === d.videoId);
}

function updateJobRow(jobId, state, name, d) {
  const row = dash.jobRows.get(jobId);
  if (!row) {
    if (name === 'job:queued' && matchesFilter(d)) soon('jobsSoon', loadJobs, 500);
    return;
  }
  const { job } = row;
  job.state = state;
  if (name === 'job:progress') job.progress = d.progress;
  if (name === 'job:completed') job.progress = 100;
  if (name === 'job:queued') { job.progress = 0; job.attempts = d.attempt || 0; }
  if (name === 'job:started') job.attempts = (d.attempt || 0) + 1;
  if (name === 'job:failed' && isNum(d.maxRetries)) job.maxRetries = d.maxRetries;
  paintJobRow(row);
}

async function cancelJob(jobId, where) {
  try {
    await api('DELETE', `/api/jobs/${encodeURIComponent(jobId)}`);
    say(where, `Job ${jobId} cancelled.`, 'ok');
  } catch (e) {
    failed(e, where, `Could not cancel ${jobId}`);
  }
}

async function discardJob(jobId, where) {
  try {
    await api('DELETE', `/api/queue/dead-letter/${encodeURIComponent(jobId)}`);
    say(where, `Job ${jobId} discarded from the dead-letter list.`, 'ok');
    return true;
  } catch (e) {
    failed(e, where, `Could not discard ${jobId}`);
    return false;
  }
}

async function retryJob(jobId, where) {
  try {
    const answer = await api('POST', `/api/jobs/${encodeURIComponent(jobId)}/retry`);
    say(where, `Retried ${answer.jobId}: it is ${answer.state} now.`, 'ok');
    return true;
  } catch (e) {
    failed(e, where, `Could not retry ${jobId}`);
    return false;
  }
}

// ---------- dead letters ----------

async function loadDeadLetter() {
  try {
    renderDeadLetter(await api('GET', '/api/queue/dead-letter?limit=100'));
  } catch (e) {
    failed(e, $('dead-message'), 'Cannot load the dead letters');
  }
}

function renderDeadLetter(jobs) {
  const list = $('dead-letter');
  const open = new Set([...list.querySelectorAll('details[open]')].map((d) => d.dataset.key));
  list.textContent = '';
  dash.deadItems.clear();
  for (const job of jobs) {
    dash.states.set(job.jobId, job.state);
    const item = deadItem(job, open);
    dash.deadItems.set(job.jobId, item);
    list.append(item);
  }
  $('dead-empty').hidden = jobs.length > 0;
}

function deadItem(job, open) {
  const item = el('li', 'dead-job');
  item.dataset.jobId = job.jobId;
  item.dataset.state = job.state;
  const line = el('div', 'job-line');
  const title = el('div');
  const params = jobParams(job);
  title.append(el('strong', '', `${job.type}${params ? ` ${params}` : ''}`), document.createTextNode(' · video '),
    el('span', 'mono', job.videoId));
  const badge = el('span', 'badge state-badge job-state', job.state);
  line.append(title, badge);
  const plural = job.attempts === 1 ? '' : 's';
  const error = job.error || 'no error recorded';
  const summary = el('p', 'job-error', `Gave up after ${job.attempts} attempt${plural}: ${error}`);
  const meta = el('p', 'job-detail hint', `${job.jobId} · failed ${fmtDateTime(job.failedAt || job.completedAt)}`);
  const attempts = el('ol', 'attempts');
  attempts.setAttribute('aria-label', `Attempts of ${job.jobId}`);
  const details = job.attemptsDetail || [];
  details.forEach((attempt, index) => attempts.append(attemptItem(job, attempt, index === details.length - 1, open)));
  const actions = el('div', 'job-actions');
  const retry = jobButton('Retry', 'retry-job', job.jobId, async () => {
    retry.disabled = true;
    if (await retryJob(job.jobId, $('dead-message'))) updateDeadItem(job.jobId, 'queued');
    else retry.disabled = false;
  });
  const cancel = jobButton('Cancel', 'cancel-job', job.jobId, () => cancelJob(job.jobId, $('dead-message')));
  cancel.disabled = true;
  cancel.title = 'A dead job has nothing to cancel; once retried, it can be cancelled while it waits or runs.';
  const discard = jobButton('Discard', 'discard-job', job.jobId, async () => {
    if (await discardJob(job.jobId, $('dead-message'))) {
      item.remove();
      dash.deadItems.delete(job.jobId);
    }
  });
  actions.append(retry, cancel, discard);
  item.append(line, summary, meta, attempts, actions);
  return item;
}

function attemptItem(job, attempt, last, open) {
  const li = el('li');
  const when = isNum(attempt.endedAt) ? ` at ${fmtClock(attempt.endedAt)}` : '';
  li.append(el('span', '', `Attempt ${attempt.attempt}: ${attempt.outcome || '?'}${when}`));
  if (attempt.error) li.append(el('div', 'job-error attempt-error', attempt.error));
  if (attempt.stderrTail || attempt.command) {
    const details = el('details');
    details.dataset.key = `${job.jobId}:${attempt.attempt}`;
    details.open = last || open.has(details.dataset.key);
    details.append(el('summary', '', 'ffmpeg output (tail) and command'));
    if (attempt.stderrTail) details.append(el('pre', 'stderr', attempt.stderrTail));
    if (attempt.command) details.append(el('pre', 'stderr command', attempt.command));
    li.append(details);
  }
  return li;
}

function updateDeadItem(jobId, state) {
  const item = dash.deadItems.get(jobId);
  if (!item) return;
  item.dataset.state = state;
  item.querySelector('.job-state').textContent = state === 'dead' ? 'dead' : `retried: ${state}`;
  const active = !FINAL_STATES.has(state);
  item.querySelector('.retry-job').disabled = state !== 'dead' && state !== 'cancelled';
  item.querySelector('.cancel-job').disabled = !active;
  item.querySelector('.discard-job').disabled = state !== 'dead';
}

// ---------- processes ----------

async function refreshProcesses() {
  if (!dash.user || !dash.user.admin) return;
  try {
    const processes = await api('GET', '/api/admin/processes');
    processes.sort((a, b) => (ROLE_ORDER[a.role] ?? 9) - (ROLE_ORDER[b.role] ?? 9) || a.pid - b.pid);
    const body = $('processes').querySelector('tbody');
    body.replaceChildren(...processes.map(processRow));
    $('processes-updated').textContent = `updated ${fmtClock(Date.now())}`;
  } catch (e) {
    failed(e, null, 'Cannot load the processes');
  }
}

function processRow(p) {
  const row = el('tr', 'process-row');
  row.dataset.role = p.role;
  row.dataset.pid = String(p.pid);
  const notes = [];
  if (isNum(p.slot)) notes.push(`slot ${p.slot}`);
  if (p.joined === false) notes.push('not joined yet');
  if (p.remote) notes.push(`remote: ${p.hostname || '?'} (${p.address || '?'})`);
  row.dataset.host = p.remote ? (p.hostname || '') : '';
  if (isNum(p.parent)) notes.push(`child of ${p.parent}`);
  row.append(el('td', '', p.role), el('td', 'num', p.pid),
    el('td', 'num', isNum(p.cpuPercent) ? p.cpuPercent.toFixed(1) : '—'),
    el('td', 'num', fmtBytes(p.rssBytes)), el('td', 'num', isNum(p.threads) ? p.threads : '—'),
    el('td', 'muted', notes.join(', ')));
  return row;
}

// ---------- forms ----------

new ResizeObserver(() => { // redrawn at the new width before the next paint
  const width = Math.round($('chart-jobs').clientWidth);
  if (dash.lastStats && Math.abs(width - (dash.chartWidth || 0)) > 1) drawCharts(dash.lastStats);
}).observe($('chart-jobs'));
$('queue-pause').addEventListener('click', () => setPaused(true));
$('queue-resume').addEventListener('click', () => setPaused(false));
$('dead-refresh').addEventListener('click', () => loadDeadLetter());
$('jobs-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  dash.filter = {
    state: $('filter-state').value, type: $('filter-type').value, videoId: $('filter-video').value.trim(),
    limit: $('filter-limit').value,
  };
  loadJobs();
});
for (const id of ['filter-state', 'filter-type', 'filter-limit']) {
  $(id).addEventListener('change', () => $('jobs-filter').requestSubmit());
}
$('clean-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const message = $('clean-message');
  const age = Number($('clean-age').value);
  if (!Number.isFinite(age) || age < 0) {
    say(message, 'Enter an age of 0 or more.', 'error');
    return;
  }
  const unit = $('clean-unit');
  const olderThan = age * Number(unit.value);
  // eslint-disable-next-line no-alert
  if (!window.confirm(`Remove every finished job older than ${age} ${unit.selectedOptions[0].text}?`)) return;
  try {
    const answer = await api('POST', '/api/queue/clean', { olderThan });
    say(message, `Removed ${answer.removed} finished job${answer.removed === 1 ? '' : 's'}.`, 'ok');
    refreshAll();
  } catch (e) {
    failed(e, message, 'Could not clean the queue');
  }
});

bootPage('dash', start);
