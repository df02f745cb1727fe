// The app: log in, upload, the library of the user's videos as cards, their jobs live over the
// WebSocket, their pipelines, downloads and the HLS player. The parts live in video-card.js, jobs-view.js,
// pipelines.js, uploads.js and player.js; this module holds the session and the library.
import {
  $, api, apiPages, ApiError, logout, notify, say, showConnection, showLogin, showUser, bootPage,
} from './common.js';
import { applyJobEvent, configureJobs, forgetJobs, mergeJobs, tickCountdowns } from './jobs-view.js';
import { LiveSocket } from './live.js';
import {
  applyPipelineEvent, applyStageJobEvent, configurePipelines, forgetPipelines, loadPipelines,
} from './pipelines.js';
import { closePlayer, playHls } from './player.js';
import { bindUploads } from './uploads.js';
import { buildCard, configureCards } from './video-card.js';

const app = {
  user: null,
  live: null,
  cards: new Map(), // videoId -> {root, jobsList, noJobs, message, player}
  reloadTimer: null,
};

const messages = () => $('messages');

function start(user) {
  app.user = user;
  showUser(user, onLogout);
  $('app').hidden = false;
  app.live = new LiveSocket({
    onEvent: (msg) => {
      if ((msg.event === 'queue:paused' || msg.event === 'queue:resumed') && msg.data && msg.data.type) {
        const type = String(msg.data.type); // one type's queue: its jobs wait, the others run on
        notify(messages(), msg.event === 'queue:paused' ? `The ${type} queue is paused by an administrator: new ${type} jobs wait.`
          : `The ${type} queue is running again.`, 'ok');
      } else if (msg.event === 'queue:paused' || msg.event === 'queue:resumed') {
        $('paused-banner').hidden = msg.event === 'queue:resumed';
      } else if (msg.event.startsWith('pipeline:')) {
        applyPipelineEvent(msg);
      } else {
        applyJobEvent(msg);
        applyStageJobEvent(msg);
      }
    },
    onControl: (msg) => {
      if (msg.type === 'error') notify(messages(), `Live updates: ${msg.error}`, 'error');
    },
    onState: (state, detail) => showConnection($('conn-state'), state, detail),
    onOpen: ({ reconnect }) => { if (reconnect) loadLibrary(); },
    onUnauthorized: () => sessionEnded(),
  });
  app.live.start();
  loadLibrary();
}

async function onLogout() {
  stop();
  await logout();
  showLogin($('app'));
  notify(messages(), 'You are logged out.', 'ok');
}

/** Any 401: the session is over; back to the login form. */
function sessionEnded() {
  if (!app.user) return;
  stop();
  showLogin($('app'), 'Your session has ended: please log in again.');
}

function stop() {
  if (app.live) app.live.stop();
  closePlayer();
  app.user = null;
  app.cards.clear();
  forgetJobs();
  forgetPipelines();
  $('library').textContent = '';
  $('uploads').textContent = '';
  showUser(null, onLogout);
}

/** Report an API error: 401 ends the session, anything else is shown where it happened. */
function failed(error, where, prefix) {
  if (error instanceof ApiError && error.status === 401) {
    sessionEnded();
    return;
  }
  const text = `${prefix}: ${error.message}`;
  if (where) say(where, text, 'error');
  else notify(messages(), text, 'error');
}

// ---------- the library ----------

async function loadLibrary() {
  const startedAt = Date.now();
  try {
    const [videos, jobs, stats] = await Promise.all([
      apiPages('/api/videos?limit=100'), api('GET', '/api/jobs?limit=1000'), api('GET', '/api/queue/stats'),
    ]);
    if (!app.user) return;
    renderLibrary(videos);
    mergeJobs(jobs, videos, startedAt);
    $('paused-banner').hidden = !stats.paused;
    await loadPipelines();
  } catch (e) {
    failed(e, null, 'Cannot load your videos');
  }
}

function scheduleReload() {
  clearTimeout(app.reloadTimer);
  app.reloadTimer = setTimeout(loadLibrary, 300);
}

function renderLibrary(videos) {
  const seen = new Set();
  const library = $('library');
  videos.sort((a, b) => (b.createdAt || 0) - (a.createdAt || 0));
  for (const video of videos) {
    seen.add(video.videoId);
    let card = app.cards.get(video.videoId);
    if (!card) {
      card = buildCard(video);
      app.cards.set(video.videoId, card);
    }
    library.append(card.root); // keeps the newest-first order
  }
  for (const [videoId, card] of app.cards) {
    if (!seen.has(videoId)) removeCard(videoId, card);
  }
  $('library-empty').hidden = videos.length > 0;
}

function removeCard(videoId, card) {
  closePlayer(card.player);
  card.root.remove();
  app.cards.delete(videoId);
  forgetJobs(videoId);
  forgetPipelines(videoId);
}

// ---------- start ----------

configureJobs({
  cardOf: (videoId) => app.cards.get(videoId),
  onPlay: (job, url) => { const card = app.cards.get(job.videoId); if (card && url) playHls(card.player, url); },
  failed,
  reload: scheduleReload,
});
configurePipelines({ cardOf: (videoId) => app.cards.get(videoId), failed });
configureCards({
  failed,
  isAdmin: () => Boolean(app.user && app.user.admin),
  onDeleted: (video) => {
    const card = app.cards.get(video.videoId);
    if (card) removeCard(video.videoId, card);
    $('library-empty').hidden = app.cards.size > 0;
    notify(messages(), `Deleted "${video.name}".`, 'ok');
  },
});
bindUploads({ onUploaded: () => loadLibrary(), onUnauthorized: () => sessionEnded() });
$('refresh').addEventListener('click', () => loadLibrary());
setInterval(tickCountdowns, 500);
bootPage('app', start);