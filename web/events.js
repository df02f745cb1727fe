// Rows of the event stream, shared by the live-events page and the dashboard: colour-coded, text only.
import { el, fmtClockMs, fmtEta, isNum, short } from './common.js';

export const EVENT_CLASSES = {
  'job:queued': 'ev-queued', 'job:started': 'ev-started', 'job:progress': 'ev-progress',
  'job:completed': 'ev-completed', 'job:failed': 'ev-failed', 'job:permanent-failure': 'ev-permanent',
  'job:cancelled': 'ev-cancelled', 'job:stalled': 'ev-stalled', 'queue:paused': 'ev-queue', 'queue:resumed': 'ev-queue',
};

const secs = (ms) => (isNum(ms) ? `${(ms / 1000).toFixed(1)} s` : '?');
const known = (v) => (v === undefined || v === null ? '?' : v);

export function jobLabel(d) {
  return [d.type, d.videoId ? `video ${d.videoId}` : null].filter(Boolean).join(' · ');
}

/** One line that says what the event means. */
export function summarize(name, d) {
  const parts = [jobLabel(d)];
  switch (name) {
    case 'job:queued':
      parts.push(`position ${known(d.queuePosition)}`, `priority ${known(d.priority)}`, `attempt ${known(d.attempt)}`);
      break;
    case 'job:started':
      if (isNum(d.startedAt) && isNum(d.queuedAt)) parts.push(`waited ${secs(d.startedAt - d.queuedAt)}`);
      if (d.attempt !== undefined) parts.push(`attempt ${d.attempt}`);
      break;
    case 'job:progress':
      parts.push(`${known(d.progress)}%`, `speed ${isNum(d.speed) ? `${d.speed}x` : '—'}`,
        `ETA ${fmtEta(d.etaSeconds)}`);
      break;
    case 'job:completed':
      parts.push(`took ${secs(d.duration)}`, `attempts ${known(d.attempts)}`);
      if (d.result !== undefined) parts.push(`result ${short(d.result, 120)}`);
      break;
    case 'job:failed': {
      const current = isNum(d.currentAttempt) ? d.currentAttempt + 1 : '?';
      const max = isNum(d.maxRetries) ? d.maxRetries + 1 : '?';
      parts.push(`attempt ${current} of ${max}`);
      if (isNum(d.retryInMs)) parts.push(`retry in ${secs(d.retryInMs)}`);
      parts.push(`error: ${short(d.error, 160)}`);
      break;
    }
    case 'job:permanent-failure':
      parts.push(`after ${known(d.totalAttempts)} attempts`, `error: ${short(d.error, 160)}`);
      break;
    case 'job:cancelled':
      break;
    case 'job:stalled':
      parts.push(`executor lost${d.reason ? `: ${short(d.reason, 120)}` : ''}; queued again`);
      break;
    case 'queue:paused':
      parts.push(`${d.type ? `${short(d.type, 40)} ` : ''}queue paused, ${known(d.queued)} waiting`);
      break;
    case 'queue:resumed':
      parts.push(`${d.type ? `${short(d.type, 40)} ` : ''}queue resumed, ${known(d.queued)} waiting`);
      break;
    default:
      parts.push(short(d, 200));
  }
  return parts.filter(Boolean).join(' · ');
}

/** A row `.event[data-event][data-job-id]`: time, seq, name, job id (and a summary, unless left out). */
export function eventRow(msg, withSummary = true) {
  const d = msg.data && typeof msg.data === 'object' ? msg.data : {};
  const jobId = d.jobId === undefined || d.jobId === null ? '' : String(d.jobId);
  const row = el('div', `event ${EVENT_CLASSES[msg.event] || 'ev-other'}`);
  row.dataset.event = msg.event;
  row.dataset.jobId = jobId;
  row.append(el('span', 'time', fmtClockMs(msg.ts)), el('span', 'seq', isNum(msg.seq) ? `#${msg.seq}` : '#?'),
    el('span', 'name', msg.event), el('span', 'ev-job', jobId || '—'));
  if (withSummary) row.append(el('span', 'summary', summarize(msg.event, d)));
  return row;
}
