// A video's card in the app: thumbnail and facts, the tools that start jobs (resize, convert, extract
// audio, HLS ladder; storyboard, preview and thumbnail from card-outputs.js; with a priority), its
// previews, its jobs (drawn by jobs-view.js) and its HLS player.
import { api, apiCall, button, el, fmtBytes, fmtDateTime, fmtDuration, isNum, localUrl, option, say,
  VIDEO_FORMATS } from './common.js';
import { ensureJob, jobLabel, renderJob, STATE_TEXT } from './jobs-view.js';
import { buildPlayer } from './player.js';
import { buildOutputs, previewTools } from './card-outputs.js';

const RESIZE_PRESETS = [[1280, 720], [854, 480], [640, 360], [320, 240]];
const HLS_HEIGHTS = [240, 360, 720, 1080];
const MIN_SIZE = 16; // as cluster/jobspec.py
const MAX_WIDTH = 7680;
const MAX_HEIGHT = 4320;

let env = {
  failed: () => {}, // (error, where, prefix): report an API error
  isAdmin: () => false, // the logged-in user is an administrator (who may ask for high priority)
  onDeleted: () => {}, // (video): the video is gone
};

export function configureCards(options) {
  env = { ...env, ...options };
}

/** A video's card: its thumbnail and facts, its tools, its jobs and its player. */
export function buildCard(video) {
  const id = video.videoId;
  const root = el('article', 'card video-card');
  root.dataset.videoId = id;
  root.setAttribute('aria-labelledby', `name-${id}`);

  const head = el('div', 'video-head');
  const thumb = el('img', 'thumb');
  thumb.src = localUrl(video.thumbnail) || '';
  thumb.alt = `Thumbnail of ${video.name}`;
  thumb.loading = 'lazy';
  thumb.width = 160;
  thumb.height = 90;
  const info = el('div');
  const name = el('h3', 'video-name', video.name);
  name.id = `name-${id}`;
  info.append(name, videoMeta(video));
  const links = el('div', 'video-links');
  const original = el('a', '', 'Download original');
  original.href = `/get-video-asset?videoId=${encodeURIComponent(id)}&type=original`;
  original.download = '';
  links.append(original);
  info.append(links);
  head.append(thumb, info);

  const message = el('p', 'form-message card-message');
  message.setAttribute('role', 'status');
  message.hidden = true;
  const tools = el('div', 'tools');
  const priority = prioritySelect(id);
  tools.append(resizeForm(video, priority, message), convertForm(video, priority, message),
    audioTool(video, priority, message), hlsForm(video, priority, message),
    ...previewTools(video, (control, type, params) => submitJob(video, control, message, {
      type, params, method: 'POST', path: '/api/jobs',
      body: { videoId: id, type, ...params, priority: priority.select.value },
    })), priority.wrap);
  const outputs = buildOutputs(video);

  const jobsHead = el('h4', 'jobs-head', 'Jobs');
  const jobsList = el('ul', 'jobs');
  jobsList.setAttribute('aria-label', `Jobs of ${video.name}`);
  const noJobs = el('p', 'empty-note no-jobs', 'No jobs yet: pick one above.');

  const player = buildPlayer(video);
  const foot = el('div', 'card-foot');
  foot.append(el('span', 'job-id mono', `id ${id}`),
    button('Delete video', 'danger small delete-video', () => deleteVideo(video, message)));

  root.append(head, tools, message, outputs.root, jobsHead, noJobs, jobsList, player.root, foot);
  return { root, jobsList, noJobs, message, player, thumb, outputs };
}

function videoMeta(video) {
  const dl = el('dl', 'meta');
  const dims = video.dimensions || {};
  const codecs = `${video.videoCodec || '?'}${video.audioCodec ? ` + ${video.audioCodec}` : ' (no audio)'}`;
  const rows = [
    ['Size', fmtBytes(video.size)],
    ['Duration', fmtDuration(video.duration)],
    ['Dimensions', isNum(dims.width) ? `${dims.width}×${dims.height}` : '—'],
    ['Format', `${video.extension || '?'} · ${codecs}`],
    ['Uploaded', fmtDateTime(video.createdAt)],
  ];
  for (const [term, value] of rows) dl.append(el('dt', '', term), el('dd', '', value));
  return dl;
}

function prioritySelect(videoId) {
  const wrap = el('div', 'tool');
  const label = el('label', 'tool-name', 'Priority');
  const select = el('select', 'priority');
  select.id = `priority-${videoId}`;
  label.htmlFor = select.id;
  if (env.isAdmin()) select.append(option('high', 'high')); // high priority is for administrators
  select.append(option('normal', 'normal', true), option('low', 'low'));
  wrap.append(label, select);
  return { wrap, select };
}

function resizeForm(video, priority, message) {
  const id = video.videoId;
  const form = el('form', 'resize-form');
  form.noValidate = true;
  const presetField = el('div', 'field');
  const presetLabel = el('label', 'tool-name', 'Resize');
  const preset = el('select', 'resize-preset');
  preset.id = `resize-${id}`;
  presetLabel.htmlFor = preset.id;
  for (const [w, h] of RESIZE_PRESETS) preset.append(option(`${w}x${h}`, `${w}×${h}`));
  preset.append(option('custom', 'Custom size…'));
  presetField.append(preset);
  const custom = el('div', 'custom-size');
  custom.hidden = true;
  const width = numberField(`resize-w-${id}`, 'Width', 'resize-width', video.dimensions.width, MAX_WIDTH);
  const height = numberField(`resize-h-${id}`, 'Height', 'resize-height', video.dimensions.height, MAX_HEIGHT);
  custom.append(width.field, height.field);
  preset.addEventListener('change', () => { custom.hidden = preset.value !== 'custom'; });
  const fit = el('select', 'resize-fit');
  fit.id = `resize-fit-${id}`;
  fit.setAttribute('aria-label', 'How the picture fits the size');
  fit.append(option('contain', 'fit inside (bars)', true), option('cover', 'fill (crop)'),
    option('stretch', 'stretch'));
  const submit = button('Resize', 'primary resize-submit', null, 'submit');
  form.append(presetLabel, presetField, custom, fit, submit);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    let w;
    let h;
    if (preset.value === 'custom') {
      w = Number(width.input.value);
      h = Number(height.input.value);
      const problem = sizeProblem(w, 'Width', MAX_WIDTH) || sizeProblem(h, 'Height', MAX_HEIGHT);
      if (problem) {
        say(message, problem, 'error');
        (sizeProblem(w, 'Width', MAX_WIDTH) ? width.input : height.input).focus();
        return;
      }
    } else {
      [w, h] = preset.value.split('x').map(Number);
    }
    submitJob(video, submit, message, {
      type: 'resize', params: { width: w, height: h, fit: fit.value }, method: 'PUT', path: '/api/video/resize',
      body: { videoId: id, width: w, height: h, fit: fit.value, priority: priority.select.value },
    });
  });
  return form;
}

function numberField(id, text, className, value, max) {
  const field = el('div', 'field');
  const label = el('label', '', text);
  const input = el('input', className);
  input.type = 'number';
  input.id = id;
  input.min = '2';
  input.max = String(max);
  input.step = '2';
  input.inputMode = 'numeric';
  if (isNum(value)) input.value = String(value);
  label.htmlFor = id;
  field.append(label, input);
  return { field, input };
}

function sizeProblem(value, name, max) {
  if (!Number.isInteger(value) || value <= 0) return `${name} must be a whole number of pixels.`;
  if (value < MIN_SIZE) return `${name} must be at least ${MIN_SIZE}.`;
  if (value % 2) return `${name} must be even (H.264 and VP9 need even dimensions).`;
  if (value > max) return `${name} must be at most ${max}.`;
  return null;
}

function convertForm(video, priority, message) {
  const id = video.videoId;
  const form = el('form', 'convert-form');
  const label = el('label', 'tool-name', 'Convert to');
  const select = el('select', 'convert-format');
  select.id = `convert-${id}`;
  label.htmlFor = select.id;
  for (const format of VIDEO_FORMATS) {
    if (format !== video.extension) select.append(option(format, format));
  }
  const submit = button('Convert', 'primary convert-submit', null, 'submit');
  form.append(label, select, submit);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const format = select.value;
    submitJob(video, submit, message, {
      type: 'convert', params: { format }, method: 'PUT',
      path: `/api/video/convert?videoId=${encodeURIComponent(id)}`, body: { format, priority: priority.select.value },
    });
  });
  return form;
}

function audioTool(video, priority, message) {
  const tool = el('div', 'tool');
  const submit = button('Extract audio', 'primary audio-submit', () => submitJob(video, submit, message, {
    type: 'extract-audio', params: {}, method: 'PATCH',
    path: `/api/video/extract-audio?videoId=${encodeURIComponent(video.videoId)}`,
    body: { priority: priority.select.value },
  }));
  tool.append(el('span', 'tool-name', 'Audio'), submit);
  if (!video.audioCodec) {
    submit.disabled = true;
    const why = el('span', 'hint', 'This video has no audio track.');
    why.id = `no-audio-${video.videoId}`;
    submit.setAttribute('aria-describedby', why.id);
    tool.append(why);
  }
  return tool;
}

function hlsForm(video, priority, message) {
  const form = el('form', 'hls-form');
  const fieldset = el('fieldset');
  fieldset.append(el('legend', 'tool-name', 'HLS ladder'));
  const boxes = [];
  const sourceHeight = video.dimensions.height;
  for (const height of HLS_HEIGHTS) {
    const label = el('label', 'check');
    const box = el('input', 'hls-rendition');
    box.type = 'checkbox';
    box.value = String(height);
    box.disabled = !(height <= sourceHeight);
    box.checked = !box.disabled;
    if (box.disabled) label.title = `Taller than the source (${sourceHeight}p)`;
    label.append(box, el('span', '', `${height}p`));
    fieldset.append(label);
    boxes.push(box);
  }
  const submit = button('Make HLS', 'primary hls-submit', null, 'submit');
  submit.disabled = boxes.every((b) => b.disabled);
  form.append(fieldset, submit);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const renditions = boxes.filter((b) => b.checked && !b.disabled).map((b) => Number(b.value));
    if (!renditions.length) {
      say(message, 'Pick at least one rendition for the HLS ladder.', 'error');
      return;
    }
    submitJob(video, submit, message, {
      type: 'hls', params: { renditions }, method: 'POST',
      path: `/api/video/hls?videoId=${encodeURIComponent(video.videoId)}`,
      body: { renditions, priority: priority.select.value },
    });
  });
  return form;
}

async function submitJob(video, control, message, request) {
  control.disabled = true;
  say(message, '');
  try {
    const { status, data } = await apiCall(request.method, request.path, request.body);
    const job = ensureJob(data.jobId, request.type, video.videoId);
    if (!job.params) job.params = request.params;
    renderJob(job);
    const label = jobLabel(job);
    say(message, status === 200
      ? `${label}: an identical job is already ${STATE_TEXT[job.state] || job.state}; it is shown below.`
      : `${label}: queued.`, 'ok');
  } catch (e) {
    env.failed(e, message, 'Could not start the job');
  } finally {
    control.disabled = false;
  }
}

async function deleteVideo(video, message) {
  // eslint-disable-next-line no-alert
  if (!window.confirm(`Delete "${video.name}" and all its outputs? Its running jobs are cancelled.`)) return;
  try {
    await api('DELETE', `/api/videos/${encodeURIComponent(video.videoId)}`);
    env.onDeleted(video);
  } catch (e) {
    env.failed(e, message, 'Could not delete the video');
  }
}
