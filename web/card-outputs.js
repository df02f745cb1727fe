// The new kinds on a video's card: the tools that request a thumbnail, a storyboard or a preview
// (POST /api/jobs) and the area showing the finished preview and storyboard.
import { button, el, localUrl, option } from './common.js';

const STORYBOARD_INTERVALS = [1, 2, 5, 10, 30]; // seconds; the server bounds them (cluster/kinds/storyboard.py)
const PREVIEW_LENGTH_S = 3;
// The kinds shown in a figure of the card's outputs: the image of a result, and how it is labelled.
const FIGURES = {
  storyboard: {
    image: (r) => r.sprite, imgClass: 'storyboard-img', caption: 'Storyboard ',
    alt: 'Storyboard: a sheet of thumbnails through the video',
  },
  preview: { image: (r) => r.url, imgClass: 'preview-img', caption: 'Preview ', alt: 'Animated preview' },
};
export const SHOWN_KINDS = new Set(['thumbnail', ...Object.keys(FIGURES)]);

/** The tools of the new kinds; `submit(control, type, params)` starts a job. */
export function previewTools(video, submit) {
  const id = video.videoId;
  const duration = Number(video.duration) || 0;

  const interval = el('select', 'storyboard-interval');
  interval.id = `storyboard-${id}`;
  const fitting = STORYBOARD_INTERVALS.filter((s) => s <= Math.max(1, duration));
  for (const s of fitting) interval.append(option(String(s), `a tile every ${s} s`, s === defaultInterval(duration, fitting)));
  const board = toolForm('storyboard', 'Storyboard', interval, [], 'Make storyboard', submit,
    () => ({ interval: Number(interval.value) }));

  const start = secondsInput('preview-start', `preview-start-${id}`, '0');
  start.max = String(Math.max(0, duration - 0.5));
  start.setAttribute('aria-describedby', `preview-hint-${id}`);
  const hint = el('span', 'hint', `seconds, ${PREVIEW_LENGTH_S} s of animated WebP`);
  hint.id = `preview-hint-${id}`;
  const preview = toolForm('preview', 'Preview from', start, [hint], 'Make preview', submit,
    () => ({ start: Number(start.value) || 0, length: PREVIEW_LENGTH_S }));

  const at = secondsInput('thumbnail-at', `thumbnail-at-${id}`, String(Math.round(duration * 5) / 10)); // half-way
  const thumb = toolForm('thumbnail', 'Thumbnail at', at, [el('span', 'hint', 'seconds')], 'New thumbnail', submit,
    () => ({ at: Number(at.value) || 0 }));
  return [board, preview, thumb];
}

/** A tool's form: the label of its `control`, what follows it, and a button submitting a job of `type`. */
function toolForm(type, labelText, control, extras, submitText, submit, params) {
  const form = el('form', `${type}-form`);
  const label = el('label', 'tool-name', labelText);
  label.htmlFor = control.id;
  const go = button(submitText, `primary ${type}-submit`, null, 'submit');
  form.append(label, control, ...extras, go);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    submit(go, type, params());
  });
  return form;
}

function secondsInput(className, id, value) {
  const input = el('input', className);
  input.type = 'number';
  input.id = id;
  input.min = '0';
  input.step = 'any';
  input.value = value;
  return input;
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
  const image = FIGURES[job.type] && localUrl(FIGURES[job.type].image(r));
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
  const img = el('img', FIGURES[type].imgClass);
  img.alt = FIGURES[type].alt;
  img.loading = 'lazy';
  const caption = el('figcaption', '', FIGURES[type].caption);
  const links = el('span', 'output-links');
  caption.append(links);
  root.append(img, caption);
  return { root, img, links, jobId: null };
}
