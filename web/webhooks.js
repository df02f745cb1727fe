// The webhooks section of the app: the user's webhooks with their recent deliveries (refreshed while
// shown), a form to add one (its secret is shown once) and a button to delete each.
import {
  $, api, button, el, fmtDateTime, short, say,
} from './common.js';

const REFRESH_MS = 2000;
const DELIVERIES_SHOWN = 10;
let timer = null;

function init() {
  const app = $('app');
  const section = $('webhooks-section');
  if (!app || !section) return;
  $('webhook-form').addEventListener('submit', onCreate);
  // The app shows #app once logged in and hides it at logout: follow it.
  new MutationObserver(() => (app.hidden ? stop() : start())).observe(app, { attributes: true, attributeFilter: ['hidden'] });
  if (!app.hidden) start();
}

function start() {
  if (timer) return;
  refresh();
  timer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
}

function stop() {
  clearInterval(timer);
  timer = null;
  $('webhooks').replaceChildren();
  say($('webhook-secret'), '');
}

async function onCreate(event) {
  event.preventDefault();
  const url = $('webhook-url').value.trim();
  const events = $('webhook-events').value.split(',').map((e) => e.trim()).filter(Boolean);
  try {
    const created = await api('POST', '/api/webhooks', { url, events });
    say($('webhook-secret'), `Created. Its secret, shown only now: ${created.secret}`, 'ok');
    $('webhook-url').value = '';
    await refresh();
  } catch (e) {
    say($('webhook-secret'), e.message, 'error');
  }
}

async function refresh() {
  let hooks;
  try {
    hooks = await api('GET', '/api/webhooks');
  } catch {
    return; // a 401 is the app's to handle; a lost connection is retried at the next tick
  }
  const views = await Promise.all(hooks.map(async (hook) => {
    let deliveries = [];
    try {
      deliveries = await api('GET', `/api/webhooks/${encodeURIComponent(hook.webhookId)}/deliveries?limit=${DELIVERIES_SHOWN}`);
    } catch { /* deleted meanwhile */ }
    return webhookView(hook, deliveries);
  }));
  if (timer === null) return;
  $('webhooks').replaceChildren(...views);
  $('webhooks-empty').hidden = hooks.length > 0;
}

function webhookView(hook, deliveries) {
  const item = el('li', 'card webhook');
  item.dataset.webhookId = hook.webhookId;
  const head = el('div', 'section-head');
  head.append(el('strong', 'webhook-url', short(hook.url, 100)), el('span', 'hint', hook.events.join(', ')));
  head.append(button('Delete', 'secondary small', async () => {
    try { await api('DELETE', `/api/webhooks/${encodeURIComponent(hook.webhookId)}`); } catch (e) { say($('webhook-secret'), e.message, 'error'); }
    await refresh();
  }));
  item.append(head);
  if (!deliveries.length) {
    item.append(el('p', 'empty-note', 'No deliveries yet.'));
    return item;
  }
  const table = el('table', 'deliveries');
  const header = el('tr');
  for (const name of ['Seq', 'Event', 'State', 'Tries', 'Status', 'Last try', 'Error']) header.append(el('th', '', name));
  table.append(el('thead'), el('tbody'));
  table.tHead.append(header);
  for (const d of deliveries) {
    const row = el('tr');
    row.dataset.seq = d.seq;
    row.dataset.state = d.state;
    const cells = [d.seq, d.event, d.state, d.attempts, d.statusCode ?? '–', d.lastAttemptAt ? fmtDateTime(d.lastAttemptAt) : '–',
      d.error ? short(d.error, 120) : ''];
    for (const value of cells) row.append(el('td', '', value));
    table.tBodies[0].append(row);
  }
  const wrap = el('div', 'table-wrap');
  wrap.append(table);
  item.append(wrap);
  return item;
}

init();
