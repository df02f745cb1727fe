// Shared by every page: the JSON API, DOM building (text only, never HTML), formatting,
// the login form and the connection badge.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const STATUS_HINTS = {
  0: 'cannot reach the server',
  400: 'invalid request',
  401: 'not logged in',
  403: 'not allowed',
  404: 'not found',
  409: 'conflict',
  413: 'too large',
  415: 'not a video',
  429: 'too many requests',
  503: 'the cluster is shutting down',
};

/** A readable message for an API answer: the server's own words, and the status. */
export function describeError(status, serverMessage) {
  const hint = STATUS_HINTS[status] || (status >= 500 ? 'server error' : 'request failed');
  const text = serverMessage ? String(serverMessage) : hint;
  return status ? `${text[0].toUpperCase()}${text.slice(1)} (HTTP ${status})` : `Network error: ${text}`;
}

function parseJson(text) {
  if (!text) return null;
  try { return JSON.parse(text); } catch { return null; }
}

/** fetch() a JSON route; resolves to the parsed body, rejects with ApiError (status 0: network). */
export async function api(method, path, body) {
  return (await apiCall(method, path, body)).data;
}

/** As api(), resolving to {status, data, headers}: e.g. 202 (a new job) or 200 (an identical one already queued). */
export async function apiCall(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, describeError(0, e && e.message));
  }
  const data = parseJson(await response.text());
  if (!response.ok) {
    const message = data && typeof data.error === 'string' ? data.error : response.statusText;
    throw new ApiError(response.status, describeError(response.status, message));
  }
  return { status: response.status, data, headers: response.headers };
}

/** Every item of a paged list route (a JSON array; X-Next-Cursor names the next page), up to maxPages. */
export async function apiPages(path, maxPages = 20) {
  const items = [];
  let next = null;
  for (let page = 0; page < maxPages; page += 1) {
    const separator = path.includes('?') ? '&' : '?';
    const answer = await apiCall('GET', next ? `${path}${separator}before=${encodeURIComponent(next)}` : path);
    items.push(...answer.data);
    next = answer.headers.get('x-next-cursor');
    if (!next) break;
  }
  return items;
}

/** The logged-in user ({userId, name, admin}), or null when there is no session. */
export async function currentUser() {
  try {
    return await api('GET', '/api/user');
  } catch (e) {
    if (e.status === 401) return null;
    throw e;
  }
}

export async function logout() {
  try { await api('DELETE', '/api/logout'); } catch { /* the cookie goes anyway on the next 401 */ }
}

export const VIDEO_FORMATS = ['mp4', 'mov', 'avi', 'webm', 'mkv', 'flv'];

/** A same-origin path from the API, never a javascript: or foreign URL. */
export function localUrl(url) {
  return typeof url === 'string' && url.startsWith('/') && !url.startsWith('//') ? url : null;
}

// ---------- DOM ----------

export const $ = (id) => document.getElementById(id);

/** An element with a class and text content (set as text, never parsed as HTML). */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function button(text, className, onClick, type = 'button') {
  const b = el('button', className, text);
  b.type = type;
  if (onClick) b.addEventListener('click', onClick);
  return b;
}

export function option(value, text, selected = false) {
  const o = el('option', '', text);
  o.value = value;
  o.selected = selected;
  return o;
}

/** Show a message in a container (role=status or alert set in the markup); kind: info, ok, error. */
export function say(container, text, kind = 'info') {
  container.textContent = text || '';
  container.dataset.kind = kind;
  container.hidden = !text;
}

/** A dismissable notice added to a list of messages (newest first, at most `max`). */
export function notify(container, text, kind = 'info', max = 4) {
  const item = el('div', `notice notice-${kind}`);
  item.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  item.append(el('span', 'notice-text', text));
  item.append(button('Dismiss', 'link-button', () => item.remove()));
  container.prepend(item);
  while (container.children.length > max) container.lastElementChild.remove();
  if (kind !== 'error') setTimeout(() => item.remove(), 8000);
  return item;
}

// ---------- formatting ----------

const pad = (n, width = 2) => String(n).padStart(width, '0');
export const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

export function fmtClock(ts) {
  const d = new Date(isNum(ts) ? ts : Date.now());
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtClockMs(ts) {
  const d = new Date(isNum(ts) ? ts : Date.now());
  return `${fmtClock(ts)}.${pad(d.getMilliseconds(), 3)}`;
}

export function fmtDateTime(ts) {
  if (!isNum(ts)) return '—';
  const d = new Date(ts);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${fmtClock(ts)}`;
}

export function fmtBytes(bytes) {
  if (!isNum(bytes)) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit === 0 || value >= 100 ? 0 : 1)} ${units[unit]}`;
}

/** Seconds as m:ss (or h:mm:ss). */
export function fmtDuration(seconds) {
  if (!isNum(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

export function fmtMs(ms) {
  if (!isNum(ms)) return '—';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

export function fmtEta(seconds) {
  if (!isNum(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  return s >= 60 ? `${Math.floor(s / 60)}m ${pad(s % 60)}s` : `${s}s`;
}

export function clampPercent(value) {
  return isNum(value) ? Math.min(100, Math.max(0, value)) : 0;
}

/** A short one-line rendering of any value, for summaries. */
export function short(value, max = 160) {
  let s;
  try { s = typeof value === 'string' ? value : JSON.stringify(value); } catch { s = String(value); }
  if (s === undefined) s = '';
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

// ---------- the login form and the header ----------

/**
 * Wire the page's login form (#login-form, #login-username, #login-password, #login-error):
 * on success `onLoggedIn(user)` runs with the user the API returned.
 */
/** Every page's start: the login form, then `start(user)` once someone is logged in. */
export async function bootPage(mainId, start) {
  bindLoginForm((user) => start(user));
  let user = null;
  try {
    user = await currentUser();
  } catch (e) {
    notify($('messages'), `Cannot reach the cluster: ${e.message}`, 'error');
  }
  $('loading').hidden = true;
  if (user) start(user);
  else showLogin($(mainId));
}

export function bindLoginForm(onLoggedIn) {
  const form = $('login-form');
  const error = $('login-error');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const username = $('login-username').value.trim();
    const password = $('login-password').value;
    if (!username || !password) {
      say(error, 'Enter your user name and password.', 'error');
      return;
    }
    const submit = form.querySelector('button[type=submit]');
    submit.disabled = true;
    say(error, '');
    try {
      const answer = await api('POST', '/api/login', { username, password });
      $('login-password').value = '';
      onLoggedIn(answer.user);
    } catch (e) {
      say(error, `Login failed: ${e.message}`, 'error');
      $('login-password').select();
    } finally {
      submit.disabled = false;
    }
  });
}

/** Show the login section (and hide `content`), focusing the user name field. */
export function showLogin(content, message) {
  content.hidden = true;
  $('login-section').hidden = false;
  say($('login-error'), message || '', 'error');
  $('login-username').focus();
}

/** The header's user name, log-out button and admin-only links. */
export function showUser(user, onLogout) {
  $('login-section').hidden = true;
  if (user && $('messages')) $('messages').replaceChildren(); // what was said before logging in is stale
  const name = $('user-name');
  if (name) name.textContent = user ? `${user.name}${user.admin ? ' (admin)' : ''}` : '';
  const link = $('dashboard-link');
  if (link) link.hidden = !(user && user.admin);
  const out = $('logout');
  if (out) {
    out.hidden = !user;
    out.onclick = onLogout;
  }
}

/** The connection badge: its text is exactly `open` while connected. */
export function showConnection(badge, state, detail) {
  badge.className = `badge conn-${state}`;
  badge.textContent = detail || state;
}
