// The HLS player of a video card: hls.js (vendored in vendor/, loaded on the first "Play") feeding a
// <video> through Media Source Extensions, or the browser's own HLS support where it has one; under it a
// seek bar showing the storyboard's thumbnails (storyboard.js).
import { button, el, option } from './common.js';
import { buildSeekBar } from './storyboard.js';

let current = null; // {instance, parts}: the player that plays

export function buildPlayer(video) {
  const root = el('section', 'player');
  root.hidden = true;
  root.setAttribute('aria-label', `HLS player for ${video.name}`);
  const media = el('video', 'hls-video');
  media.controls = true;
  media.playsInline = true;
  media.muted = true; // so that it may start by itself; the controls unmute it
  media.setAttribute('aria-label', `HLS stream of ${video.name}`);
  const levelLabel = el('label', '', 'Quality');
  const level = el('select', 'hls-level');
  level.id = `hls-level-${video.videoId}`;
  levelLabel.htmlFor = level.id;
  level.append(option('-1', 'Auto'));
  const status = el('span', 'player-status muted');
  status.setAttribute('role', 'status');
  const seekBar = buildSeekBar(media, video.name);
  const parts = { root, media, level, status, setStoryboard: seekBar.load };
  level.addEventListener('change', () => {
    if (current && current.parts === parts && current.instance) current.instance.currentLevel = Number(level.value);
  });
  const bar = el('div', 'player-bar');
  bar.append(levelLabel, level, status, button('Close player', 'secondary small', () => closePlayer(parts)));
  root.append(media, seekBar.root, bar);
  return parts;
}

function loadHlsLibrary() {
  if (window.Hls) return Promise.resolve(window.Hls);
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = '/vendor/hls.min.js';
    script.onload = () => (window.Hls ? resolve(window.Hls) : reject(new Error('hls.js did not load')));
    script.onerror = () => reject(new Error('cannot load /vendor/hls.min.js'));
    document.head.append(script);
  });
}

/** Play an HLS master playlist in a card's player (one player plays at a time). */
export async function playHls(parts, url) {
  closePlayer();
  const { root, media, level, status } = parts;
  root.hidden = false;
  status.textContent = 'Loading the playlist…';
  let Hls;
  try {
    Hls = await loadHlsLibrary();
  } catch (e) {
    status.textContent = `The HLS player could not load: ${e.message}`;
    return;
  }
  if (Hls.isSupported()) {
    const hls = new Hls({ enableWorker: true });
    current = { instance: hls, parts };
    hls.on(Hls.Events.MEDIA_ATTACHED, () => { media.dataset.hls = 'attached'; });
    hls.on(Hls.Events.MANIFEST_PARSED, (_event, data) => {
      media.dataset.levels = String(data.levels.length);
      level.length = 1;
      data.levels.forEach((lvl, index) => level.append(option(String(index), `${lvl.height}p`)));
      status.textContent = `${data.levels.length} rendition${data.levels.length === 1 ? '' : 's'}: `
        + data.levels.map((lvl) => `${lvl.height}p`).join(', ');
      media.play().catch(() => { /* autoplay refused: the controls are there */ });
    });
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal) return;
      const code = data.response && data.response.code;
      status.textContent = `Playback error: ${data.details}${code ? ` (HTTP ${code})` : ''}`;
      media.dataset.hlsError = data.details;
    });
    hls.attachMedia(media);
    hls.loadSource(url);
  } else if (media.canPlayType('application/vnd.apple.mpegurl')) {
    media.dataset.hls = 'native';
    current = { instance: null, parts };
    media.src = url;
    status.textContent = 'Playing with the browser’s own HLS support.';
  } else {
    status.textContent = 'This browser cannot play HLS (no Media Source Extensions).';
  }
  root.scrollIntoView({ block: 'nearest' });
}

/** Stop the player that plays (only if it is `parts`, when given; another one is just hidden). */
export function closePlayer(parts) {
  if (parts && (!current || current.parts !== parts)) {
    parts.root.hidden = true;
    return;
  }
  if (!current) return;
  if (current.instance) current.instance.destroy();
  const { root, media, level } = current.parts;
  current = null;
  media.pause();
  media.removeAttribute('src');
  media.load();
  delete media.dataset.hls;
  delete media.dataset.levels;
  delete media.dataset.hlsError;
  level.length = 1;
  root.hidden = true;
}
