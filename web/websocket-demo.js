// The live-events page: every event the server sends this user (all it may see, or only the rooms it
// joined: one video, one job), colour-coded, with progress bars,
// filters by event, counters, and a pause that BUFFERS: while paused nothing new is drawn, but every
// event is kept (up to MAX_BUFFERED) and drawn, in order, on resume. Counters count what arrived.
import {
  $, button, clampPercent, el, fmtClockMs, fmtEta, isNum, logout, short, showConnection, showLogin, showUser,
  bootPage,
} from './common.js';
import { eventRow, jobLabel, summarize } from './events.js';
import { JOB_EVENTS, LiveSocket, PIPELINE_EVENTS, QUEUE_EVENTS } from './live.js';

const MAX_ROWS = 500;
const MAX_STATUS = 100;
const MAX_BUFFERED = 5000;
const EVENT_NAMES = [...JOB_EVENTS, ...PIPELINE_EVENTS, ...QUEUE_EVENTS];

const demo = {
  live: null,
  user: null,
  progressRows: new Map(), // jobId -> the job's one progress row
  counts: {},
  shown: new Set(EVENT_NAMES),
  paused: false,
  buffer: [],
  droppedWhilePaused: 0,
};

// ---------- session ----------

function start(user) {
  demo.user = user;
  showUser(user, onLogout);
  $('demo').hidden = false;
  const rooms = demo.live ? demo.live.rooms : new Set(); // kept across a log-out and in
  const jobRooms = demo.live ? demo.live.jobRooms : new Set();
  demo.live = new LiveSocket({
    onEvent: receive,
    onControl: control,
    onState: (state, detail) => {
      showConnection($('conn-state'), state, detail);
      if (state === 'open') status(`Connected to ${demo.live.url}`);
    },
    onOpen: ({ reconnect }) => {
      if (reconnect && demo.live.lastSeq !== null) status(`Reconnected: resuming after seq ${demo.live.lastSeq}`);
    },
    onUnauthorized: () => {
      demo.user = null;
      showUser(null, onLogout);
      showLogin($('demo'), 'Your session has ended: please log in again.');
    },
  });
  demo.live.rooms = rooms;
  demo.live.jobRooms = jobRooms;
  demo.live.start();
}

async function onLogout() {
  if (demo.live) demo.live.stop();
  demo.user = null;
  showUser(null, onLogout);
  await logout();
  showLogin($('demo'));
}

// ---------- messages ----------

function status(text, isError = false) {
  const log = $('status-log');
  log.prepend(el('li', isError ? 'error' : '', `${fmtClockMs()}  ${text}`));
  while (log.children.length > MAX_STATUS) log.lastElementChild.remove();
}

function control(msg) {
  switch (msg.type) {
    case 'welcome':
      $('worker-pid').textContent = String(msg.worker ?? '?');
      break;
    case 'error':
      status(`Server error: ${short(msg.error, 200)}`, true);
      if (msg.videoId || msg.jobId) {
        if (msg.videoId) demo.live.rooms.delete(msg.videoId);
        if (msg.jobId) demo.live.jobRooms.delete(msg.jobId);
        if (!demo.live.rooms.size && !demo.live.jobRooms.size) demo.live.watchAll();
        renderSubscriptions();
      }
      break;
    case 'subscribed':
      status(msg.all ? 'Watching all the events you may see' : `Subscribed to ${roomName(msg)}`);
      break;
    case 'unsubscribed':
      status(`Unsubscribed from ${roomName(msg)}`);
      break;
    case 'resumed':
      status(`Resumed after seq ${msg.since}: ${msg.replayed} missed event${msg.replayed === 1 ? '' : 's'} replayed`);
      break;
    default:
      status(`Message: ${short(msg, 200)}`);
  }
}

function receive(msg) {
  demo.counts[msg.event] = (demo.counts[msg.event] || 0) + 1;
  renderCounters();
  $('last-seq').textContent = String(demo.live.lastSeq ?? 'none');
  if (!demo.paused) {
    draw(msg);
    return;
  }
  demo.buffer.push(msg);
  if (demo.buffer.length > MAX_BUFFERED) {
    demo.buffer.shift();
    demo.droppedWhilePaused += 1;
  }
  renderPausedNote();
}

// ---------- drawing ----------

function draw(msg) {
  if (msg.event === 'job:progress') {
    drawProgress(msg);
    return;
  }
  insertRow(eventRow(msg));
}

function insertRow(row) {
  const events = $('events');
  row.hidden = !demo.shown.has(row.dataset.event);
  events.prepend(row);
  $('events-empty').hidden = true;
  while (events.children.length > MAX_ROWS) {
    const old = events.lastElementChild;
    if (demo.progressRows.get(old.dataset.jobId) === old) demo.progressRows.delete(old.dataset.jobId);
    old.remove();
  }
}

function drawProgress(msg) {
  const d = msg.data && typeof msg.data === 'object' ? msg.data : {};
  const jobId = d.jobId === undefined || d.jobId === null ? '' : String(d.jobId);
  let row = demo.progressRows.get(jobId);
  if (!row || !row.isConnected) {
    row = eventRow(msg, false);
    row.classList.add('progress-row');
    const bar = el('div', 'summary bar');
    const progress = el('progress');
    progress.max = 100;
    progress.setAttribute('aria-label', `Progress of job ${jobId || 'unknown'}`);
    bar.append(progress, el('span', 'pct'), el('span', 'meta'));
    row.append(bar);
    demo.progressRows.set(jobId, row);
    insertRow(row);
  }
  const pct = clampPercent(d.progress);
  row.querySelector('.time').textContent = fmtClockMs(msg.ts);
  row.querySelector('.seq').textContent = isNum(msg.seq) ? `#${msg.seq}` : '#?';
  row.querySelector('progress').value = pct;
  row.dataset.progress = String(pct);
  row.querySelector('.pct').textContent = `${Math.round(pct * 10) / 10}%`;
  row.querySelector('.meta').textContent = [jobLabel(d), `speed ${isNum(d.speed) ? `${d.speed}x` : '—'}`,
    `ETA ${fmtEta(d.etaSeconds)}`].filter(Boolean).join(' · ');
  row.title = summarize(msg.event, d);
}

function renderCounters() {
  const box = $('counters');
  box.textContent = '';
  for (const name of Object.keys(demo.counts).sort()) {
    const item = el('span', '', `${name}: ${demo.counts[name]}`);
    item.dataset.event = name;
    box.append(item);
  }
}

// ---------- pause, filters, clear ----------

function renderPausedNote() {
  const note = $('paused-note');
  note.hidden = !demo.paused;
  const dropped = demo.droppedWhilePaused ? ` (the oldest ${demo.droppedWhilePaused} were dropped)` : '';
  const plural = demo.buffer.length === 1 ? '' : 's';
  note.textContent = `Paused: ${demo.buffer.length} new event${plural} buffered${dropped}; `
    + 'they are shown when you resume.';
}

function setPaused(paused) {
  demo.paused = paused;
  const toggle = $('pause');
  toggle.setAttribute('aria-pressed', String(paused));
  toggle.textContent = paused ? 'Resume' : 'Pause';
  if (!paused) {
    const buffered = demo.buffer;
    demo.buffer = [];
    buffered.forEach(draw);
    const plural = buffered.length === 1 ? '' : 's';
    if (buffered.length) status(`Resumed the display: ${buffered.length} buffered event${plural} shown`);
    demo.droppedWhilePaused = 0;
  }
  renderPausedNote();
}

function buildFilters() {
  const box = $('filters');
  for (const name of EVENT_NAMES) {
    const label = el('label', 'check');
    const box1 = el('input', 'event-filter');
    box1.type = 'checkbox';
    box1.value = name;
    box1.checked = true;
    box1.addEventListener('change', () => {
      if (box1.checked) demo.shown.add(name);
      else demo.shown.delete(name);
      for (const row of $('events').children) row.hidden = !demo.shown.has(row.dataset.event);
    });
    label.append(box1, el('span', '', name));
    box.append(label);
  }
}

function clear() {
  $('events').textContent = '';
  $('counters').textContent = '';
  demo.progressRows.clear();
  demo.counts = {};
  demo.buffer = [];
  demo.droppedWhilePaused = 0;
  renderPausedNote();
  $('events-empty').hidden = false;
}

// ---------- rooms ----------

const roomName = (msg) => (msg.jobId !== undefined ? `job ${short(msg.jobId, 100)}` : `video ${short(msg.videoId, 100)}`);

function rooms() {
  if (!demo.live) return [];
  return [...[...demo.live.rooms].map((id) => ({ kind: 'video', id })),
    ...[...demo.live.jobRooms].map((id) => ({ kind: 'job', id }))];
}

function renderSubscriptions() {
  const list = $('subscriptions');
  list.textContent = '';
  const joined = rooms();
  $('watching').textContent = joined.length
    ? `Watching: ${joined.map((r) => `${r.kind} ${r.id}`).join(', ')} (and queue notices).`
    : 'Watching: all the events you may see.';
  $('watching').dataset.rooms = String(joined.length);
  for (const { kind, id } of joined) {
    const item = el('li', '', `${kind} ${id}`);
    item.dataset.kind = kind;
    const remove = button('×', '', () => leave(kind, id));
    remove.setAttribute('aria-label', `Unsubscribe from ${kind} ${id}`);
    item.append(remove);
    list.append(item);
  }
}

function readId() {
  const input = $('video-id');
  const id = input.value.trim();
  if (!id) {
    status('Enter a video or job id first.', true);
    input.focus();
  }
  return id;
}

/** Leave a room; leaving the last one goes back to all the events you may see. */
function leave(kind, id) {
  const sent = kind === 'job' ? demo.live.unsubscribeJob(id) : demo.live.unsubscribe(id);
  if (!sent) status(`Not connected; removed ${kind} ${id} locally.`);
  if (!demo.live.rooms.size && !demo.live.jobRooms.size) demo.live.watchAll();
  renderSubscriptions();
}

$('sub-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const id = readId();
  if (!id || !demo.live) return;
  const kind = $('room-kind').value;
  const sent = kind === 'job' ? demo.live.subscribeJob(id) : demo.live.subscribe(id);
  if (!sent) status(`Not connected; will subscribe to ${kind} ${id} on reconnect.`);
  renderSubscriptions();
});
$('unsubscribe').addEventListener('click', () => {
  const id = readId();
  if (id && demo.live) leave($('room-kind').value, id);
});
$('watch-all').addEventListener('click', () => {
  if (!demo.live) return;
  if (!demo.live.watchAll()) status('Not connected; will watch all on reconnect.');
  renderSubscriptions();
});
$('pause').addEventListener('click', () => setPaused(!demo.paused));
$('clear').addEventListener('click', clear);

buildFilters();
renderSubscriptions();
bootPage('demo', start);
