// Stacked bar charts as inline SVG, built node by node (createElementNS): every value lands
// as text or an attribute, never markup. No library, no inline style (the CSP refuses it):
// colours are classes of style.css.
import { h } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const W = 720;
const H = 220;
const PAD = { left: 64, right: 8, top: 10, bottom: 28 };
export const COLOURS = 8; // .c0 … .c7 in style.css; .cx is "everything else"

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// A round number at or above `x` (1, 2, 5 × 10^n), so the axis reads well.
export function ceilNice(x) {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

// times: every bucket's start (unix seconds), in order; series: [{name, cls, values}] with
// values aligned to times; fmt: a number as the tooltips say it (axis: as the axis does,
// by default the same); label: a
// bucket's start as text; legend: whether to name the series under the chart.
export function stackedBars({ id, title, times, series, fmt, axis = fmt, label, legend = series.length > 1 }) {
  const sums = times.map((_, i) => series.reduce((a, s) => a + (s.values[i] || 0), 0));
  const total = sums.reduce((a, b) => a + b, 0);
  const top = ceilNice(Math.max(0, ...sums));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = plotW / Math.max(1, times.length);
  const barW = Math.max(1, step * 0.8);
  const y = (v) => PAD.top + plotH - (v / top) * plotH;

  const grid = [0, 0.5, 1].map((f) => svg('g', { class: 'tick' },
    svg('line', { x1: PAD.left, x2: W - PAD.right, y1: y(top * f), y2: y(top * f) }),
    svg('text', { x: PAD.left - 6, y: y(top * f) + 4, 'text-anchor': 'end' }, axis(top * f))));
  const picks = times.length ? [...new Set([0, Math.floor((times.length - 1) / 2), times.length - 1])] : [];
  const xs = picks.map((i) => svg('text', {
    class: 'xlabel', x: PAD.left + step * i + step / 2, y: H - 8,
    'text-anchor': i === 0 ? 'start' : i === times.length - 1 ? 'end' : 'middle',
  }, label(times[i])));
  const bars = [];
  times.forEach((t, i) => {
    let base = 0;
    for (const s of series) {
      const v = s.values[i] || 0;
      if (v <= 0) continue;
      const y0 = y(base);
      const y1 = y(base + v);
      base += v;
      bars.push(svg('rect', {
        class: `bar ${s.cls}`, x: (PAD.left + step * i + (step - barW) / 2).toFixed(2),
        y: y1.toFixed(2), width: barW.toFixed(2), height: Math.max(0.5, y0 - y1).toFixed(2),
        'data-t': t, 'data-series': s.name, 'data-value': v,
      }, svg('title', {}, `${s.name} · ${label(t)}: ${fmt(v)}`)));
    }
  });
  const chart = svg('svg', {
    viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart-svg',
    'aria-label': `${title}: ${fmt(total)} in total over ${times.length} buckets`,
  }, grid, svg('line', { class: 'axis', x1: PAD.left, x2: W - PAD.right, y1: y(0), y2: y(0) }), bars, xs);
  return h('figure', { class: 'chart card', id, 'data-total': total },
    h('figcaption', {}, h('strong', {}, title), ' ', h('span', { class: 'muted chart-total' }, fmt(total))),
    chart,
    legend ? h('ul', { class: 'legend' }, series.map((s) => h('li', {}, h('span', { class: `swatch ${s.cls}`, 'aria-hidden': 'true' }), s.name))) : null);
}
