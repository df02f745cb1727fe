// A video card's pipelines: each stage in order with its state, kept live from the pipeline events (each
// one re-reads its pipeline) and the job events of its stages' jobs; an Approve button on a pipeline
// waiting for review, a Cancel button on one that has not ended.
import { api, button, el, say } from './common.js';
import { STATE_TEXT } from './jobs-view.js';
import { stateAfter } from './live.js';

const PIPELINE_TEXT = {
  running: 'running', review: 'waiting for your approval', completed: 'completed', failed: 'failed',
  cancelled: 'cancelled',
};
const STAGE_TEXT = { ...STATE_TEXT, pending: 'waiting', delayed: 'failed, will retry', removed: 'failed, job removed' };

const pipelines = new Map(); // pipelineId -> the pipeline as the API shows it
const sections = new Map(); // pipelineId -> its <section>
const stageOfJob = new Map(); // jobId -> [pipelineId, stage index]
let env = {
  cardOf: () => undefined, // videoId -> its card ({root, message}), if shown
  failed: () => {}, // (error, where, prefix): report an API error
};

export function configurePipelines(options) {
  env = { ...env, ...options };
}

/** The caller's pipelines, newest first, drawn on their videos' cards. */
export async function loadPipelines() {
  const list = await api('GET', '/api/pipelines?limit=1000');
  for (const pipeline of list.reverse()) showPipeline(pipeline); // oldest first: the newest ends on top
}

export function forgetPipelines(videoId) {
  for (const [id, pipeline] of pipelines) {
    if (videoId && pipeline.videoId !== videoId) continue;
    pipelines.delete(id);
    const section = sections.get(id);
    if (section) section.remove();
    sections.delete(id);
  }
  for (const [jobId, [pipelineId]] of stageOfJob) {
    if (!pipelines.has(pipelineId)) stageOfJob.delete(jobId);
  }
}

/** A pipeline:* event: its pipeline is read again (the answer holds the next stage's job already). */
export async function applyPipelineEvent(msg) {
  const id = msg.data && msg.data.pipelineId;
  if (!id) return;
  try {
    showPipeline(await api('GET', `/api/pipelines/${encodeURIComponent(id)}`));
  } catch (e) {
    if (e.status !== 404) env.failed(e, null, 'Cannot show a pipeline');
  }
}

/** A job event: the state of the stage whose job it is, if one is shown. */
export function applyStageJobEvent(msg) {
  const where = msg.data && stageOfJob.get(msg.data.jobId);
  const state = stateAfter(msg.event);
  if (!where || !state) return;
  const [pipelineId, index] = where;
  const pipeline = pipelines.get(pipelineId);
  const stage = pipeline && pipeline.stages[index];
  if (!stage || stage.jobId !== msg.data.jobId || stage.state === state) return;
  stage.state = state;
  render(pipeline);
}

function showPipeline(pipeline) {
  const known = pipelines.get(pipeline.pipelineId);
  if (known && (known.updatedAt || 0) > (pipeline.updatedAt || 0)) return; // an older answer arrived late
  pipelines.set(pipeline.pipelineId, pipeline);
  for (const stage of pipeline.stages) {
    if (stage.jobId) stageOfJob.set(stage.jobId, [pipeline.pipelineId, stage.index]);
  }
  render(pipeline);
}

function render(pipeline) {
  const card = env.cardOf(pipeline.videoId);
  if (!card) return;
  let section = sections.get(pipeline.pipelineId);
  if (!section) {
    section = el('section', 'pipeline');
    section.dataset.pipelineId = pipeline.pipelineId;
    sections.set(pipeline.pipelineId, section);
  }
  const anchor = card.root.querySelector('.jobs-head');
  const first = card.root.querySelector('.pipeline');
  if (!section.isConnected) card.root.insertBefore(section, first || anchor);
  section.dataset.state = pipeline.state;
  section.textContent = '';
  const title = pipeline.name ? `Pipeline “${pipeline.name}”` : 'Pipeline';
  const head = el('h4', 'pipeline-head', `${title}: `);
  head.append(el('span', 'pipeline-state', PIPELINE_TEXT[pipeline.state] || pipeline.state));
  const list = el('ol', 'stages');
  list.setAttribute('aria-label', `${title} stages`);
  for (const stage of pipeline.stages) list.append(stageItem(pipeline, stage));
  section.append(head, list);
  const actions = el('div', 'pipeline-actions');
  if (pipeline.state === 'review') actions.append(approveButton(pipeline, card));
  if (mayCancel(pipeline)) actions.append(cancelButton(pipeline, card));
  if (actions.childElementCount) section.append(actions);
}

/** Running, waiting for review, or failed with its dead job kept (a retry may still resume it). */
function mayCancel(pipeline) {
  const stage = pipeline.stages[pipeline.currentStage];
  return ['running', 'review', 'failed'].includes(pipeline.state) && !(stage && stage.state === 'removed');
}

function stageItem(pipeline, stage) {
  const item = el('li', 'stage');
  item.dataset.state = stage.state;
  item.dataset.index = String(stage.index);
  if (stage.index === pipeline.currentStage && pipeline.state !== 'completed') item.classList.add('current');
  item.append(el('span', 'stage-type', stageLabel(stage)),
    el('span', `stage-state state-${stage.state}`, STAGE_TEXT[stage.state] || stage.state));
  if (stage.review) item.append(el('span', 'stage-review', 'review'));
  return item;
}

function stageLabel(stage) {
  const p = stage.params || {};
  if (stage.type === 'resize') return `resize ${p.width}×${p.height}`;
  if (stage.type === 'convert') return `convert to ${p.format}`;
  if (stage.type === 'hls') return `HLS ${(p.renditions || []).map((h) => `${h}p`).join(' ')}`;
  return stage.type;
}

function cancelButton(pipeline, card) {
  const cancel = button('Cancel pipeline', 'secondary small cancel-pipeline', async () => {
    if (!window.confirm('Cancel this pipeline? Its running stage is stopped and no later stage runs.')) return;
    cancel.disabled = true;
    try {
      showPipeline(await api('DELETE', `/api/pipelines/${encodeURIComponent(pipeline.pipelineId)}`));
      say(card.message, 'Pipeline cancelled.', 'ok');
    } catch (e) {
      cancel.disabled = false;
      env.failed(e, card.message, 'Could not cancel the pipeline');
    }
  });
  return cancel;
}

function approveButton(pipeline, card) {
  const stage = pipeline.stages[pipeline.currentStage];
  const next = pipeline.stages[pipeline.currentStage + 1];
  const text = next ? `Approve: go on to ${stageLabel(next)}` : 'Approve: finish the pipeline';
  const approve = button(text, 'primary small approve-stage', async () => {
    approve.disabled = true;
    try {
      showPipeline(await api('POST', `/api/pipelines/${encodeURIComponent(pipeline.pipelineId)}/approve`));
      say(card.message, `Approved ${stageLabel(stage)}.`, 'ok');
    } catch (e) {
      approve.disabled = false;
      env.failed(e, card.message, 'Could not approve the stage');
    }
  });
  return approve;
}
