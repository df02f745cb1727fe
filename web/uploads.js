// Uploads, from the file picker or dropped files: one at a time, each with its progress bar
// (XMLHttpRequest upload progress), the raw body POSTed with the header `filename`.
import { $, button, describeError, el, fmtBytes, VIDEO_FORMATS } from './common.js';

let queue = Promise.resolve(); // one upload after another
let env = { onUploaded: () => {}, onUnauthorized: () => {} };

function headerSafe(name) {
  return name.replace(/[^\x20-\x7e]/g, '_'); // a header carries Latin-1 at most: keep ASCII, the extension survives
}

function uploadFiles(files) {
  for (const file of files) {
    const item = uploadItem(file);
    queue = queue.then(() => uploadOne(file, item));
  }
}

function uploadItem(file) {
  const item = el('li', 'upload');
  item.dataset.state = 'waiting';
  const bar = el('progress');
  bar.max = 100;
  bar.value = 0;
  bar.setAttribute('aria-label', `Upload of ${file.name}`);
  const status = el('span', 'upload-status', 'Waiting…');
  const cancel = button('Cancel', 'secondary small upload-cancel');
  item.append(el('span', 'upload-name', `${file.name} (${fmtBytes(file.size)})`), cancel, bar, status);
  $('uploads').prepend(item);
  return { item, bar, status, cancel };
}

function finishUpload(parts, state, text) {
  parts.item.dataset.state = state;
  parts.status.textContent = text;
  parts.status.setAttribute('role', state === 'error' ? 'alert' : 'status');
  parts.cancel.textContent = 'Dismiss';
  parts.cancel.onclick = () => parts.item.remove();
  if (state === 'done') parts.bar.value = 100;
  else parts.bar.hidden = true;
}

function uploadOne(file, parts) {
  const ext = (file.name.split('.').pop() || '').toLowerCase();
  if (!file.name.includes('.') || !VIDEO_FORMATS.includes(ext)) {
    finishUpload(parts, 'error', `Not uploaded: the name must end in .${VIDEO_FORMATS.join(', .')}.`);
    return Promise.resolve();
  }
  if (file.size === 0) {
    finishUpload(parts, 'error', 'Not uploaded: the file is empty.');
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    parts.item.dataset.state = 'uploading';
    parts.status.textContent = 'Uploading…';
    parts.cancel.onclick = () => xhr.abort();
    xhr.open('POST', '/api/upload-video');
    xhr.setRequestHeader('filename', headerSafe(file.name));
    xhr.upload.onprogress = (event) => {
      if (!event.lengthComputable) return;
      const pct = (event.loaded / event.total) * 100;
      parts.bar.value = pct;
      parts.status.textContent = `Uploading… ${Math.floor(pct)}% of ${fmtBytes(event.total)}`;
    };
    xhr.upload.onload = () => {
      parts.bar.removeAttribute('value'); // indeterminate while the server probes it
      parts.status.textContent = 'Uploaded; probing it and making its thumbnail…';
    };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 201) {
        finishUpload(parts, 'done', `Ready: ${file.name}`);
        env.onUploaded();
      } else if (xhr.status === 401) {
        finishUpload(parts, 'error', describeError(401, body && body.error));
        env.onUnauthorized();
      } else {
        finishUpload(parts, 'error', `Upload failed: ${describeError(xhr.status, body && body.error)}`);
      }
      resolve();
    };
    xhr.onerror = () => { finishUpload(parts, 'error', describeError(0, 'the upload was interrupted')); resolve(); };
    xhr.onabort = () => { finishUpload(parts, 'error', 'Upload cancelled.'); resolve(); };
    xhr.send(file);
  });
}

/** Wire the file picker (#file-input) and the drop zone (#drop-zone). */
export function bindUploads(options) {
  env = options;
  const input = $('file-input');
  input.addEventListener('change', () => {
    uploadFiles([...input.files]);
    input.value = '';
  });
  const zone = $('drop-zone');
  const hasFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes('Files');
  zone.addEventListener('dragover', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
    zone.classList.add('dragging');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('dragging'));
  zone.addEventListener('drop', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    zone.classList.remove('dragging');
    uploadFiles([...event.dataTransfer.files]);
  });
  // a file dropped beside the zone would make the browser leave the page
  window.addEventListener('dragover', (event) => { if (hasFiles(event)) event.preventDefault(); });
  window.addEventListener('drop', (event) => { if (hasFiles(event)) event.preventDefault(); });
}
