// The new kinds on a video's card: the tools that request a thumbnail, a storyboard or a preview
// (POST /api/jobs) and the area showing the finished preview and storyboard.
import { el, localUrl, option } from './common.js';

const STORYBOARD_INTERVALS = [1, 2, 5, 10, 30]; // seconds; the server bounds them (cluster/kinds/storyboard.py)
const PREVIEW_LENGTH_S = 3;
export const SHOWN_KINDS = new Set(['thumbnail', 'storyboard', 'preview']);

/** The tools of the new kinds; `submit(control, type, params)` starts a job. */
export function previewTools(video, submit) {
  const id = video.videoId;
  const duration = Number(video.duration) || 0;

  const board = el('form', 'storyboard-form');
  const boardLabel = el('label', 'tool-name', 'Storyboard');
  const interval = el('select', 'storyboard-interval');
  interval.id = `storyboard-${id}`;
  boardLabel.htmlFor = interval.id;
  const fitting = STORYBOARD_INTERVALS.filter((s) => s <= Math.max(1, duration));
  for (const s of fitting) interval.append(option(String(s), `a tile every ${s} s`, s === defaultInterval(duration, fitting)));
  const boardSubmit = el('button', 'primary storyboard-submit', 'Make storyboard');
  boardSubmit.type = 'submit';
  board.append(boardLabel, interval, boardSubmit);
  board.addEventListener('submit', (event) => {
    event.preventDefault();
    submit(boardSubmit, 'storyboard', { interval: Number(interval.value) });
  });

  const preview = el('form', 'preview-form');
  const previewLabel = el('label', 'tool-name', 'Preview from');
  const start = el('input', 'preview-start');
  start.type = 'number';
  start.id = `preview-start-${id}`;
  start.min = '0';
  start.step = 'any';
  start.max = String(Math.max(0, duration - 0.5));
  start.value = '0';
  start.setAttribute('aria-describedby', `preview-hint-${id}`);
  previewLabel.htmlFor = start.id;
  const hint = el('span', 'hint', `seconds, ${PREVIEW_LENGTH_S} s of animated WebP`);
  hint.id = `preview-hint-${id}`;
  const previewSubmit = el('button', 'primary preview-submit', 'Make preview');
  previewSubmit.type = 'submit';
  preview.append(previewLabel, start, hint, previewSubmit);
  preview.addEventListener('submit', (event) => {
    event.preventDefault();
    submit(previewSubmit, 'preview', { start: Number(start.value) || 0, length: PREVIEW_LENGTH_S });
  });

  const thumb = el('form', 'thumbnail-form');
  const thumbLabel = el('label', 'tool-name', 'Thumbnail at');
  const at = el('input', 'thumbnail-at');
  at.type = 'number';
  at.id = `thumbnail-at-${id}`;
  at.min = '0';
  at.step = 'any';
  at.value = String(Math.round(duration * 5) / 10); // half-way
  thumbLabel.htmlFor = at.id;
  const thumbSubmit = el('button', 'primary thumbnail-submit', 'New thumbnail');
  thumbSubmit.type = 'submit';
  thumb.append(thumbLabel, at, el('span', 'hint', 'seconds'), thumbSubmit);
  thumb.addEventListener('submit', (event) => {
    event.preventDefault();
    submit(thumbSubmit, 'thumbnail', { at: Number(at.value) || 0 });
  });
  return [board, preview, thumb];
}

function defaultInterval(duration, choices) {
  return choices.find((s) => duration / s <= 60) || choices[choices.length - 1];
}

/** The area showing a card's preview and storyboard, hidden while it has neither. */
export function buildOutputs(video) {
  const root = el('div', 'card-outputs');
  root.hidden = true;
  root.setAttribute('aria-label', `Previews of ${video.name}`);
  return { root, figures: new Map() };
}

/** Show a finished job of a new kind: its image on the card (or the card's thumbnail, replaced). */
export function showOutput(card, job) {
  const r = job.result || {};
  const version = `&job=${encodeURIComponent(job.jobId)}`; // a new result, a new URL: never a stale image
  if (job.type === 'thumbnail') {
    const url = localUrl(r.url);
    if (url) card.thumb.src = url + version;
    return;
  }
  const image = job.type === 'storyboard' ? localUrl(r.sprite) : localUrl(r.url);
  if (!image) return;
  const outputs = card.outputs;
  let figure = outputs.figures.get(job.type);
  if (!figure) {
    figure = buildFigure(job.type);
    outputs.figures.set(job.type, figure);
    outputs.root.append(figure.root);
  }
  if (figure.jobId === job.jobId) return;
  figure.jobId = job.jobId;
  figure.img.src = image + version;
  figure.root.dataset.jobId = job.jobId;
  figure.links.textContent = '';
  for (const output of r.outputs || []) {
    const a = el('a', 'download', output.name);
    a.href = localUrl(output.url) || '';
    a.download = '';
    figure.links.append(a);
  }
  if (job.type === 'storyboard' && card.player.setStoryboard) card.player.setStoryboard(localUrl(r.url));
  outputs.root.hidden = false;
}

function buildFigure(type) {
  const root = el('figure', `output output-${type}`);
  const img = el('img', type === 'storyboard' ? 'storyboard-img' : 'preview-img');
  img.alt = type === 'storyboard' ? 'Storyboard: a sheet of thumbnails through the video' : 'Animated preview';
  img.loading = 'lazy';
  const caption = el('figcaption', '', type === 'storyboard' ? 'Storyboard ' : 'Preview ');
  const links = el('span', 'output-links');
  caption.append(links);
  root.append(img, caption);
  return { root, img, links, jobId: null };
}
