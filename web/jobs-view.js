// The app's jobs: one record per job, kept from /api/jobs and moved by the WebSocket's events, each drawn
// as an item of its video's card with its state, a <progress> bar, its errors and its actions.
import { api, button, clampPercent, el, fmtBytes, fmtEta, isNum, localUrl, say } from './common.js';
import { FINAL_STATES } from './live.js';
import { SHOWN_KINDS, showOutput } from './card-outputs.js';

export const STATE_TEXT = {
  queued: 'queued', running: 'running', delayed: 'failed, will retry', completed: 'completed',
  dead: 'failed permanently', cancelled: 'cancelled',
};

const jobs = new Map(); // jobId -> record
const items = new Map(); // jobId -> <li>
let env = {
  cardOf: () => undefined, // videoId -> its card ({jobsList, noJobs, message}), if shown
  onPlay: () => {}, // (job, url): play an HLS ladder
  failed: () => {}, // (error, where, prefix): report an API error
  reload: () => {}, // an event for a video without a card: reload the library
};

export function configureJobs(options) {
  env = { ...env, ...options };
}

/** Forget the jobs of one video (or of all, for a log-out). */
export function forgetJobs(videoId) {
  for (const [jobId, job] of jobs) {
    if (videoId === undefined || job.videoId === videoId) {
      jobs.delete(jobId);
      items.delete(jobId);
    }
  }
}

/** Redraw the "retrying in N s" countdowns. */
export function tickCountdowns() {
  for (const job of jobs.values()) if (job.state === 'delayed') renderJob(job);
}

export const isFinal = (job) => FINAL_STATES.has(job.state);

export function ensureJob(jobId, type, videoId) {
  let job = jobs.get(jobId);
  if (!job) {
    job = {
      jobId, type, videoId, params: null, state: 'queued', progress: 0, attempts: 0, maxRetries: null,
      error: null, result: null, failures: 0, createdAt: Date.now(), updatedAt: 0,
    };
    jobs.set(jobId, job);
  }
  return job;
}

/** Jobs from /api/jobs (and the newest of each output from /api/videos), unless an event is newer. */
export function mergeJobs(list, videos, fetchedAt) {
  for (const remote of list) {
    if (!env.cardOf(remote.videoId)) continue;
    const job = ensureJob(remote.jobId, remote.type, remote.videoId);
    job.params = remote.params;
    if (isNum(remote.createdAt)) job.createdAt = remote.createdAt;
    job.maxRetries = remote.maxRetries;
    if (job.updatedAt > fetchedAt) continue; // an event told us more recently
    Object.assign(job, {
      state: remote.state, progress: remote.progress, attempts: remote.attempts, error: remote.error,
      result: remote.result, failures: Math.max(job.failures, failuresOf(remote)),
    });
  }
  for (const video of videos) {
    for (const [key, summary] of outputsOf(video)) {
      if (!summary || jobs.has(summary.jobId)) continue;
      const job = ensureJob(summary.jobId, key.type, video.videoId);
        Object.assign(job, { params: key.params, state: summary.state, progress: summary.progress,
        result: summary.result });
    }
  }
  const ordered = [...jobs.values()].sort((a, b) => b.createdAt - a.createdAt);
  for (const job of ordered) renderJob(job, true);
}

function outputsOf(video) {
  const out = [];
  for (const [dims, summary] of Object.entries(video.resizes || {})) {
    const [width, height] = dims.split('x').map(Number);
    out.push([{ type: 'resize', params: { width, height } }, summary]);
  }
  for (const [format, summary] of Object.entries(video.conversions || {})) {
    out.push([{ type: 'convert', params: { format } }, summary]);
  }
  out.push([{ type: 'extract-audio', params: {} }, video.audio]);
  out.push([{ type: 'hls', params: null }, video.hls]);
  out.push([{ type: 'thumbnail', params: null }, video.thumbnailJob]);
  out.push([{ type: 'storyboard', params: null }, video.storyboard]);
  out.push([{ type: 'preview', params: null }, video.preview]);
  return out;
}

function failuresOf(job) {
  const attempts = job.attempts || 0;
  if (['delayed', 'dead', 'queued'].includes(job.state)) return attempts;
  if (['running', 'completed'].includes(job.state)) return Math.max(0, attempts - 1);
  return 0;
}

/** A job event from the WebSocket. */
export function applyJobEvent(msg) {
  const d = msg.data && typeof msg.data === 'object' ? msg.data : {};
  if (!d.jobId) return;
  const job = ensureJob(String(d.jobId), d.type, d.videoId);
  if (!env.cardOf(d.videoId)) env.reload(); // uploaded elsewhere: the reload brings its card
  else if (!job.params) fetchDetails(job);
  job.updatedAt = Date.now();
  updateFromEvent(job, msg.event, d);
  renderJob(job);
}

function updateFromEvent(job, name, d) {
  switch (name) {
    case 'job:queued':
      if (isFinal(job)) Object.assign(job, { failures: 0, error: null, result: null });
      Object.assign(job, { state: 'queued', progress: 0, queuePosition: d.queuePosition, attempts: d.attempt || 0,
        speed: null, etaSeconds: null });
      if (isNum(d.queuedAt) && !job.params) job.createdAt = d.queuedAt;
      break;
    case 'job:started':
      Object.assign(job, { state: 'running', attempts: (d.attempt || 0) + 1 });
      break;
    case 'job:progress':
      Object.assign(job, { state: 'running', progress: clampPercent(d.progress), speed: d.speed,
        etaSeconds: d.etaSeconds });
      break;
    case 'job:completed':
      Object.assign(job, { state: 'completed', progress: 100, result: d.result || null, duration: d.duration });
      break;
    case 'job:failed':
      Object.assign(job, { state: 'delayed', error: d.error, failures: job.failures + 1,
        attempts: (d.currentAttempt || 0) + 1, maxRetries: d.maxRetries,
        retryAt: Date.now() + (isNum(d.retryInMs) ? d.retryInMs : 0) });
      break;
    case 'job:permanent-failure':
      Object.assign(job, { state: 'dead', error: d.error, attempts: d.totalAttempts,
        failures: Math.max(job.failures + 1, 1) });
      break;
    case 'job:cancelled':
      job.state = 'cancelled';
      break;
    case 'job:stalled':
      Object.assign(job, { state: 'queued', error: 'its executor stopped answering; it runs again' });
      break;
    default:
  }
}

async function fetchDetails(job) {
  if (job.fetching) return;
  job.fetching = true;
  try {
    const remote = await api('GET', `/api/jobs/${encodeURIComponent(job.jobId)}`);
    job.params = remote.params;
    job.maxRetries = remote.maxRetries;
    if (isNum(remote.createdAt)) job.createdAt = remote.createdAt;
    renderJob(job);
  } catch { /* the label stays generic */ }
}

export function jobLabel(job) {
  const p = job.params || {};
  switch (job.type) {
    case 'resize': return isNum(p.width)
      ? `Resize to ${p.width}×${p.height}${p.fit && p.fit !== 'contain' ? ` (${p.fit})` : ''}` : 'Resize';
    case 'convert': return p.format ? `Convert to ${p.format}` : 'Convert';
    case 'extract-audio': return 'Extract audio';
    case 'hls': return Array.isArray(p.renditions) ? `HLS ladder ${p.renditions.map((h) => `${h}p`).join(', ')}`
      : 'HLS ladder';
    case 'thumbnail': return isNum(p.at) ? `Thumbnail at ${p.at} s` : 'Thumbnail';
    case 'storyboard': return isNum(p.interval) ? `Storyboard, a tile every ${p.interval} s` : 'Storyboard';
    case 'preview': return isNum(p.start) ? `Preview ${p.start}–${p.start + p.length} s` : 'Preview';
    default: return job.type || 'Job';
  }
}

function jobDetail(job) {
  const attemptsOf = isNum(job.maxRetries) ? ` of ${job.maxRetries + 1}` : '';
  switch (job.state) {
    case 'queued': {
      const parts = ['Waiting for an executor'];
      if (isNum(job.queuePosition)) parts.push(`position ${job.queuePosition} in the queue`);
      if (job.attempts > 0) parts.push(`attempt ${job.attempts + 1}${attemptsOf} next`);
      return parts.join(' · ');
    }
    case 'running': {
      const parts = [`Running${job.attempts > 1 ? ` (attempt ${job.attempts}${attemptsOf})` : ''}`];
      if (isNum(job.speed)) parts.push(`speed ${job.speed}×`);
      if (isNum(job.etaSeconds)) parts.push(`about ${fmtEta(job.etaSeconds)} left`);
      return parts.join(' · ');
    }
    case 'delayed': {
      const wait = isNum(job.retryAt) ? Math.max(0, (job.retryAt - Date.now()) / 1000) : null;
      return `Attempt ${job.attempts}${attemptsOf} failed${wait !== null ? `; retrying in ${wait.toFixed(1)} s` : ''}`;
    }
    case 'completed': {
      const r = job.result || {};
      const parts = ['Done'];
      if (isNum(r.width)) parts.push(`${r.width}×${r.height}`);
      if (isNum(r.size)) parts.push(fmtBytes(r.size));
      if (Array.isArray(r.renditions)) parts.push(r.renditions.map((v) => `${v.height}p`).join(', '));
      if (isNum(r.tiles)) parts.push(`${r.tiles} tiles of ${r.tileWidth}×${r.tileHeight}`);
      return parts.join(' · ');
    }
    case 'dead': return `Gave up after ${job.attempts || '?'} attempt${job.attempts === 1 ? '' : 's'}`;
    case 'cancelled': return 'Cancelled';
    default: return job.state;
  }
}

function downloadUrl(job) {
  const fromResult = localUrl(job.result && job.result.url);
  if (fromResult) return fromResult;
  const p = job.params || {};
  const base = `/get-video-asset?videoId=${encodeURIComponent(job.videoId)}`;
  if (job.type === 'resize' && isNum(p.width)) return `${base}&type=resize&dimensions=${p.width}x${p.height}`;
  if (job.type === 'convert' && p.format) return `${base}&type=converted&format=${encodeURIComponent(p.format)}`;
  if (job.type === 'extract-audio') return `${base}&type=audio`;
  if (job.type === 'hls') return `/hls/${encodeURIComponent(job.videoId)}/master.m3u8`;
  return null;
}

export function renderJob(job, reorder = false) {
  const card = env.cardOf(job.videoId);
  if (!card) return;
  let item = items.get(job.jobId);
  if (!item) {
    item = buildJobItem(job);
    items.set(job.jobId, item);
    insertJob(card.jobsList, item, job);
  } else if (reorder) {
    card.jobsList.append(item);
  }
  card.noJobs.hidden = true;
  const label = jobLabel(job);
  item.dataset.state = job.state;
  item.dataset.type = job.type;
  item.dataset.progress = String(clampPercent(job.progress));
  item.dataset.failures = String(job.failures);
  item.dataset.createdAt = String(job.createdAt);
  item.querySelector('.job-label').textContent = label;
  const badge = item.querySelector('.job-state');
  badge.textContent = STATE_TEXT[job.state] || job.state;
  const bar = item.querySelector('progress');
  bar.value = clampPercent(job.progress);
  bar.setAttribute('aria-label', `Progress of ${label}`);
  item.querySelector('.job-pct').textContent = `${Math.round(clampPercent(job.progress))}%`;
  item.querySelector('.job-detail').textContent = jobDetail(job);
  const error = item.querySelector('.job-error');
  const showError = job.error && job.state !== 'completed';
  error.hidden = !showError;
  error.textContent = showError
    ? `${job.failures ? `Failed ${job.failures}× — ` : ''}last error: ${job.error}` : '';
  renderJobActions(item.querySelector('.job-actions'), job, label);
  if (job.state === 'completed' && job.result && SHOWN_KINDS.has(job.type)) showNewest(card, job);
  foldFinished(card);
  watchPositions();
}

// A queued job's place moves as the jobs ahead of it start, other users' included, which this page
// never hears of: while any of its jobs waits, it asks for their places now and then.
const POSITIONS_EVERY_MS = 2000;
let positionsTimer = null;

function watchPositions() {
  if (positionsTimer !== null) return; // a look is due already: no need to scan every job at each event
  const waiting = [...jobs.values()].some((job) => job.state === 'queued');
  if (waiting) positionsTimer = setTimeout(refreshPositions, POSITIONS_EVERY_MS);
}

async function refreshPositions() {
  try {
    for (const fresh of await api('GET', '/api/jobs?state=queued&limit=100')) {
      const job = jobs.get(fresh.jobId);
      if (job && job.state === 'queued' && isNum(fresh.queuePosition) && fresh.queuePosition !== job.queuePosition) {
        job.queuePosition = fresh.queuePosition;
        renderJob(job);
      }
    }
  } catch (e) {
    // the next look tries again
  } finally {
    positionsTimer = null;
    watchPositions();
  }
}

/** A finished thumbnail, storyboard or preview shows on its card, unless a newer one of its kind does. */
function showNewest(card, job) {
  const newer = [...jobs.values()].some((other) => other.videoId === job.videoId && other.type === job.type
    && other.state === 'completed' && other.result && other.createdAt > job.createdAt);
  if (!newer) showOutput(card, job);
}

const FINISHED_SHOWN = 3; // a card shows its unfinished jobs and its newest finished ones; the rest fold

/** Long job lists fold: finished jobs past the newest FINISHED_SHOWN hide behind a "show" toggle. */
function foldFinished(card) {
  const finished = [...card.jobsList.children].filter((li) => FINAL_STATES.has(li.dataset.state));
  const folded = Math.max(0, finished.length - FINISHED_SHOWN);
  if (!card.foldToggle) {
    card.foldToggle = button('', 'link-button small fold-jobs', () => {
      card.showAllJobs = !card.showAllJobs;
      foldFinished(card);
    });
    card.jobsList.after(card.foldToggle);
  }
  finished.forEach((li, i) => { li.hidden = !card.showAllJobs && i >= FINISHED_SHOWN; });
  card.foldToggle.hidden = folded === 0;
  card.foldToggle.textContent = card.showAllJobs
    ? 'Hide older finished jobs' : `Show ${folded} older finished job${folded === 1 ? '' : 's'}`;
  card.foldToggle.setAttribute('aria-expanded', String(Boolean(card.showAllJobs)));
}

function buildJobItem(job) {
  const item = el('li', 'job');
  item.dataset.jobId = job.jobId;
  const line = el('div', 'job-line');
  line.append(el('span', 'job-label'), el('span', 'badge state-badge job-state'));
  const barRow = el('div', 'job-bar');
  const bar = el('progress', 'job-progress');
  bar.max = 100;
  barRow.append(bar, el('span', 'job-pct'));
  const error = el('p', 'job-error');
  error.setAttribute('role', 'status');
  item.append(line, barRow, el('p', 'job-detail'), error, el('div', 'job-actions'),
    el('span', 'job-id mono', job.jobId));
  return item;
}

function insertJob(list, item, job) {
  for (const other of list.children) {
    if (Number(other.dataset.createdAt || 0) < job.createdAt) {
      list.insertBefore(item, other);
      return;
    }
  }
  list.append(item);
}

function renderJobActions(actions, job, label) {
  const key = `${job.state}|${job.result ? 1 : 0}|${label}`;
  if (actions.dataset.key === key) return; // unchanged: keep focus on its buttons
  actions.dataset.key = key;
  actions.textContent = '';
  if (job.state === 'completed') {
    const url = downloadUrl(job);
    if (job.type === 'hls') {
      actions.append(button('Play', 'primary small play-hls', () => env.onPlay(job, downloadUrl(job))));
      if (url) actions.append(link(url, 'Master playlist (m3u8)', 'download', `HLS master playlist of ${label}`));
    } else if (url) {
      actions.append(link(url, 'Download', 'download', `Download the output of ${label}`));
    }
  }
  if (!isFinal(job)) {
    actions.append(button('Cancel', 'secondary small cancel-job', (e) => cancelJob(job, e.currentTarget)));
  }
  if (job.state === 'dead' || job.state === 'cancelled') {
    actions.append(button('Retry', 'secondary small retry-job', (e) => retryJob(job, e.currentTarget)));
  }
  for (const b of actions.querySelectorAll('button')) b.dataset.jobId = job.jobId;
}

function link(href, text, className, ariaLabel) {
  const a = el('a', className, text);
  a.href = href;
  if (className === 'download') a.download = '';
  if (ariaLabel) a.setAttribute('aria-label', ariaLabel);
  return a;
}

async function cancelJob(job, control) {
  control.disabled = true;
  const card = env.cardOf(job.videoId);
  try {
    await api('DELETE', `/api/jobs/${encodeURIComponent(job.jobId)}`);
    if (card) say(card.message, `${jobLabel(job)}: cancelled.`, 'ok');
  } catch (e) {
    control.disabled = false;
    env.failed(e, card && card.message, 'Could not cancel the job');
  }
}

async function retryJob(job, control) {
  control.disabled = true;
  const card = env.cardOf(job.videoId);
  try {
    const answer = await api('POST', `/api/jobs/${encodeURIComponent(job.jobId)}/retry`);
    if (card) say(card.message, `${jobLabel(job)}: retried, ${answer.state} now.`, 'ok');
  } catch (e) {
    control.disabled = false;
    env.failed(e, card && card.message, 'Could not retry the job');
  }
}
