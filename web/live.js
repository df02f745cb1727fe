// The live event stream of /ws, shared by every page.
//
// - reconnects by itself after a drop, with exponential back-off from 0.5 s to 10 s;
// - rooms narrow: with none it hears every event the user may see; once it joins video or job rooms it
//   hears only theirs (and queue notices) until watchAll();
// - on every reconnect it re-joins its rooms and then, after an event was seen, sends
//   {"type":"resume","since":lastSeq}: the server holds live events while room messages come first and
//   replays what the rooms allow, so nothing is missed or repeated;
// - a close with 4401 (the session ended: logout elsewhere, password change) stops it for good;
// - tells the page its state: connecting, open, closed (with the reconnect countdown) or offline.

import { currentUser } from './common.js';

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 10000;
const STABLE_MS = 5000; // a connection that lived this long starts the back-off afresh
const SESSION_ENDED = 4401; // the server's close code when the session ended

export class LiveSocket {
  /**
   * @param {object} handlers
   *   onEvent(msg)        an event {event, seq, ts, data}, each once, in seq order
   *   onControl(msg)      a control message {type: welcome|subscribed|unsubscribed|resumed|error, ...}
   *   onState(state, detail)   connecting | open | closed | offline; detail is the text to show
   *   onOpen({reconnect}) after each open (a page may refetch its state after a reconnect)
   *   onUnauthorized()    the handshake was refused because the session ended; reconnecting stops
   */
  constructor(handlers = {}) {
    this.handlers = handlers;
    this.lastSeq = null;
    this.rooms = new Set(); // video ids
    this.jobRooms = new Set();
    this.ws = null;
    this.delay = MIN_DELAY_MS;
    this.stopped = true;
    this.opens = 0;
    this.state = 'offline';
    this._retryTimer = null;
    this._tickTimer = null;
  }

  get url() {
    return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this._connect();
  }

  /** Close for good (log-out); start() again later resumes from the last seq. */
  stop() {
    this.stopped = true;
    this._clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, 'bye');
    this._setState('offline');
  }

  /** Reconnect now (skipping the wait), e.g. from a "reconnect now" button. */
  reconnectNow() {
    if (this.stopped || this.ws) return;
    this._clearTimers();
    this._connect();
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  /** Join a video's room; kept, and joined again after every reconnect. */
  subscribe(videoId) {
    this.rooms.add(videoId);
    return this.send({ type: 'subscribe-video', videoId });
  }

  /** Leave it; with no room left the socket hears queue notices only, until watchAll(). */
  unsubscribe(videoId) {
    this.rooms.delete(videoId);
    return this.send({ type: 'unsubscribe-video', videoId });
  }

  subscribeJob(jobId) {
    this.jobRooms.add(jobId);
    return this.send({ type: 'subscribe-job', jobId });
  }

  unsubscribeJob(jobId) {
    this.jobRooms.delete(jobId);
    return this.send({ type: 'unsubscribe-job', jobId });
  }

  /** Leave every room: hear every event the user may see again. */
  watchAll() {
    this.rooms.clear();
    this.jobRooms.clear();
    return this.send({ type: 'subscribe-all' });
  }

  _connect() {
    this._clearTimers();
    this._setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this._scheduleReconnect(0);
      return;
    }
    this.ws = ws;
    let openedAt = 0;
    ws.onopen = () => {
      openedAt = Date.now();
      for (const videoId of this.rooms) ws.send(JSON.stringify({ type: 'subscribe-video', videoId }));
      for (const jobId of this.jobRooms) ws.send(JSON.stringify({ type: 'subscribe-job', jobId }));
      if (this.lastSeq !== null) ws.send(JSON.stringify({ type: 'resume', since: this.lastSeq }));
      this._setState('open');
      const reconnect = this.opens > 0;
      this.opens += 1;
      if (this.handlers.onOpen) this.handlers.onOpen({ reconnect });
    };
    ws.onmessage = (message) => this._receive(message.data);
    ws.onclose = (event) => {
      if (this.ws !== ws) return; // stopped, or replaced
      this.ws = null;
      if (this.stopped) return;
      if (event.code === SESSION_ENDED) {
        this.stop();
        if (this.handlers.onUnauthorized) this.handlers.onUnauthorized();
        return;
      }
      if (!openedAt) this._checkSession();
      const lived = openedAt ? Date.now() - openedAt : 0;
      if (lived >= STABLE_MS) this.delay = MIN_DELAY_MS;
      this._scheduleReconnect(event.code);
    };
    ws.onerror = () => { /* a close follows: handled there */ };
  }

  _receive(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    if (!msg || typeof msg !== 'object') return;
    if (typeof msg.event === 'string') {
      if (typeof msg.seq === 'number') {
        if (this.lastSeq !== null && msg.seq <= this.lastSeq) return; // seen already
        this.lastSeq = msg.seq;
      }
      if (this.handlers.onEvent) this.handlers.onEvent(msg);
    } else if (this.handlers.onControl) {
      this.handlers.onControl(msg);
    }
  }

  /** A refused handshake looks like any failed connection: ask the API whether the session ended. */
  async _checkSession() {
    try {
      if (await currentUser() === null && !this.stopped) { // null: a 401
        this.stop();
        if (this.handlers.onUnauthorized) this.handlers.onUnauthorized();
      }
    } catch { /* the server is down: keep trying */ }
  }

  _scheduleReconnect(code) {
    const wait = this.delay;
    this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
    const due = Date.now() + wait;
    const tick = () => {
      const left = Math.max(0, due - Date.now()) / 1000;
      const shown = left < 1 ? left.toFixed(1) : String(Math.ceil(left));
      this._setState('closed', `closed${code && code !== 1006 ? ` (${code})` : ''}, reconnecting in ${shown} s`);
    };
    tick();
    this._tickTimer = setInterval(tick, 250);
    this._retryTimer = setTimeout(() => this._connect(), wait);
  }

  _clearTimers() {
    clearTimeout(this._retryTimer);
    clearInterval(this._tickTimer);
    this._retryTimer = null;
    this._tickTimer = null;
  }

  _setState(state, detail) {
    this.state = state;
    if (this.handlers.onState) this.handlers.onState(state, detail || state);
  }
}

/** The state a job is in after an event (null: the event says nothing about it). */
export function stateAfter(eventName) {
  return {
    'job:queued': 'queued',
    'job:started': 'running',
    'job:progress': 'running',
    'job:completed': 'completed',
    'job:failed': 'delayed',
    'job:permanent-failure': 'dead',
    'job:cancelled': 'cancelled',
    'job:stalled': 'queued',
  }[eventName] || null;
}

export const JOB_EVENTS = ['job:queued', 'job:started', 'job:progress', 'job:completed', 'job:failed',
  'job:permanent-failure', 'job:cancelled', 'job:stalled'];
export const QUEUE_EVENTS = ['queue:paused', 'queue:resumed'];
export const PIPELINE_EVENTS = ['pipeline:started', 'pipeline:stage-completed', 'pipeline:review-needed',
  'pipeline:completed', 'pipeline:failed', 'pipeline:resumed', 'pipeline:cancelled'];
export const FINAL_STATES = new Set(['completed', 'dead', 'cancelled']);
