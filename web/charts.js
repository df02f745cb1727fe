// Small inline-SVG charts for the dashboard: no library, text only through textContent.
import { isNum } from './common.js';

const SVG = 'http://www.w3.org/2000/svg';

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * A chart of 60 per-minute values (oldest first) as an inline SVG: `kind` 'bars', or 'line' through the
 * minutes that have a value. `width` in pixels (drawn 1:1 so the text stays legible), `format` for the labels,
 * or `axisFormat(top)` returning the format for an axis that goes up to `top` (so every label has one unit).
 */
export function perMinuteChart(values, { kind, format, axisFormat, label, className, width }) {
  const height = 170;
  const pad = { left: 52, right: 10, top: 12, bottom: 26 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const present = values.filter(isNum);
  const max = Math.max(...present, 0);
  const top = max > 0 ? niceCeil(max) : 1;
  const svg = svgEl('svg', { viewBox: `0 0 ${width} ${height}`, class: `chart ${className}`, role: 'img',
    'aria-label': label, preserveAspectRatio: 'xMidYMid meet' });
  svg.append(svgEl('title', {}, label));
  const y = (v) => pad.top + plotH - (v / top) * plotH;
  if (axisFormat) format = axisFormat(top); // one unit on the whole axis, chosen by its top
  if (!present.length || max <= 0) {
    svg.append(svgEl('text', { x: pad.left + plotW / 2, y: pad.top + plotH / 2, 'text-anchor': 'middle',
      class: 'empty' }, 'nothing in the last hour'));
  }
  const step = plotW / values.length;
  for (const fraction of present.length && max > 0 ? [0, 0.5, 1] : [0]) {
    const gy = y(top * fraction);
    const kind = fraction ? 'grid' : 'axis';
    svg.append(svgEl('line', { x1: pad.left, x2: width - pad.right, y1: gy, y2: gy, class: kind }));
    svg.append(svgEl('text', { x: pad.left - 6, y: gy + 4, 'text-anchor': 'end' }, format(top * fraction)));
  }
  svg.append(svgEl('line', { x1: pad.left, x2: pad.left, y1: pad.top, y2: pad.top + plotH, class: 'axis' }));
  for (const [index, text] of [[0, '−60 min'], [30, '−30 min'], [59, 'now']]) {
    const anchor = index === 0 ? 'start' : index === 59 ? 'end' : 'middle';
    const x = index === 59 ? width - pad.right : pad.left + index * step;
    svg.append(svgEl('text', { x, y: height - 8, 'text-anchor': anchor }, text));
  }
  if (kind === 'bars') {
    values.forEach((v, i) => {
      if (!isNum(v) || v <= 0) return;
      const bar = svgEl('rect', { x: pad.left + i * step + 1, y: y(v), width: Math.max(1, step - 2),
        height: pad.top + plotH - y(v), class: 'bar' });
      bar.append(svgEl('title', {}, `${60 - i} min ago: ${format(v)}`));
      svg.append(bar);
    });
  } else {
    const points = values.map((v, i) => (isNum(v) ? [pad.left + (i + 0.5) * step, y(v), v, i] : null)).filter(Boolean);
    if (points.length > 1) {
      svg.append(svgEl('polyline', { points: points.map(([px, py]) => `${px},${py}`).join(' '), class: 'line' }));
    }
    for (const [px, py, v, i] of points) {
      const dot = svgEl('circle', { cx: px, cy: py, r: 3, class: 'dot' });
      dot.append(svgEl('title', {}, `${60 - i} min ago: ${format(v)}`));
      svg.append(dot);
    }
  }
  return svg;
}

function niceCeil(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (value <= m * magnitude) return m * magnitude;
  return 10 * magnitude;
}
