// A seek bar for the HLS player, with the video's storyboard (cluster/kinds/storyboard.py) as a
// thumbnail tooltip: the WebVTT maps time ranges to tiles of one sprite (`url#xywh=x,y,w,h`).
import { el } from './common.js';

const TIMING = /^(\d+):(\d\d):(\d\d)\.(\d{3})\s+-->\s+(\d+):(\d\d):(\d\d)\.(\d{3})/;

/** The cues of a storyboard VTT: [{start, end, url, x, y, w, h}], in order. */
export function parseStoryboard(text) {
  const cues = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i += 1) {
    const timing = TIMING.exec(lines[i]);
    const target = timing && /^(.*)#xywh=(\d+),(\d+),(\d+),(\d+)$/.exec((lines[i + 1] || '').trim());
    if (!target) continue;
    const t = timing.slice(1).map(Number);
    cues.push({
      start: t[0] * 3600 + t[1] * 60 + t[2] + t[3] / 1000,
      end: t[4] * 3600 + t[5] * 60 + t[6] + t[7] / 1000,
      url: target[1], x: Number(target[2]), y: Number(target[3]), w: Number(target[4]), h: Number(target[5]),
    });
  }
  return cues;
}

/** The seek bar of a <video>; `load(url)` fetches a storyboard for its tooltip. */
export function buildSeekBar(media, label) {
  const root = el('div', 'seek-wrap');
  const seek = el('input', 'seek');
  seek.type = 'range';
  seek.min = '0';
  seek.max = '1000';
  seek.value = '0';
  seek.setAttribute('aria-label', `Seek in ${label}`);
  const tip = el('div', 'seek-tip');
  tip.hidden = true;
  tip.setAttribute('aria-hidden', 'true');
  const tipTime = el('span', 'seek-tip-time');
  tip.append(tipTime);
  root.append(seek, tip);
  let cues = [];

  const duration = () => (Number.isFinite(media.duration) && media.duration > 0 ? media.duration
    : cues.length ? cues[cues.length - 1].end : 0);
  media.addEventListener('timeupdate', () => {
    if (duration() && document.activeElement !== seek) seek.value = String(Math.round(1000 * media.currentTime / duration()));
  });
  seek.addEventListener('input', () => {
    if (duration()) media.currentTime = (Number(seek.value) / 1000) * duration();
    showAt(Number(seek.value) / 1000);
  });
  seek.addEventListener('pointermove', (event) => {
    const box = seek.getBoundingClientRect();
    showAt(Math.min(1, Math.max(0, (event.clientX - box.left) / box.width)));
  });
  seek.addEventListener('pointerleave', () => { tip.hidden = true; });
  seek.addEventListener('blur', () => { tip.hidden = true; });

  function showAt(fraction) {
    const time = fraction * duration();
    const cue = cues.find((c) => time >= c.start && time < c.end) || (time >= duration() && cues[cues.length - 1]);
    if (!cue) {
      tip.hidden = true;
      return;
    }
    tip.style.width = `${cue.w}px`;
    tip.style.height = `${cue.h}px`;
    tip.style.backgroundImage = `url("${cue.url.replace(/["\\]/g, '')}")`;
    tip.style.backgroundPosition = `-${cue.x}px -${cue.y}px`;
    tip.style.left = `calc(${(fraction * 100).toFixed(2)}% - ${cue.w / 2}px)`;
    tip.dataset.tile = `${cue.x},${cue.y}`;
    tipTime.textContent = `${Math.floor(time / 60)}:${String(Math.floor(time % 60)).padStart(2, '0')}`;
    tip.hidden = false;
  }

  async function load(url) {
    if (!url) return;
    try {
      const response = await fetch(url, { credentials: 'same-origin' });
      if (!response.ok) return;
      cues = parseStoryboard(await response.text()).filter((c) => c.url.startsWith('/'));
      root.dataset.cues = String(cues.length);
    } catch { /* no tooltip: the bar still seeks */ }
  }

  return { root, load };
}
