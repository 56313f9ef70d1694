// Usage over time: requests, tokens and cost the replicas counted, per minute or hour, by
// key, team, model or provider (stacked bars), with the totals under the charts. The
// choices live in the URL (#/usage?range=24h&group=key&key=…), so a key's usage is a link.
import { get, ApiError } from './api.js';
import { h, replace, notice, table } from './dom.js';
import { stackedBars, COLOURS } from './chart.js';

export const RANGES = {
  '1h': { label: 'last hour', seconds: 3600, bucket: 'minute' },
  '24h': { label: 'last 24 h', seconds: 86_400, bucket: 'hour' },
  // Per day: the day counts, 8 reads (per hour would sum 10,080 minute buckets).
  '7d': { label: 'last 7 days', seconds: 7 * 86_400, bucket: 'day' },
};
const STEP = { minute: 60, hour: 3600, day: 86_400 };
const DIMENSIONS = ['key', 'team', 'model', 'provider'];
const REFRESH_MS = 15_000;

export function usd(micro) {
  const x = Number(micro) / 1e6;
  return `$${x.toFixed(x !== 0 && Math.abs(x) < 1 ? 6 : 2)}`;
}

// An axis tick in dollars: as few digits as it needs ($0.025, $1.5, $200).
export function usdTick(micro) {
  return `$${Number((Number(micro) / 1e6).toPrecision(3))}`;
}

export function count(n) {
  const x = Number(n);
  if (x >= 1e6) return `${(x / 1e6).toFixed(x >= 1e7 ? 0 : 1)}M`;
  if (x >= 1e4) return `${(x / 1e3).toFixed(x >= 1e5 ? 0 : 1)}k`;
  return Number.isInteger(x) ? String(x) : x.toFixed(1);
}

function timeLabel(bucket) {
  return (t) => {
    const iso = new Date(t * 1000).toISOString();
    return bucket === 'day' ? iso.slice(0, 10) : `${iso.slice(bucket === 'minute' ? 11 : 5, 16).replace('T', ' ')}Z`;
  };
}

// The query's rows → per group: name, totals, and each metric aligned to every bucket.
export function shape(report, group) {
  const step = STEP[report.bucket];
  const times = [];
  for (let t = report.from; t < report.to; t += step) times.push(t);
  const index = new Map(times.map((t, i) => [t, i]));
  const groups = new Map();
  for (const r of report.rows) {
    const name = group ? (r[group] ?? '') : 'all';
    let g = groups.get(name);
    if (!g) {
      g = { name, requests: 0, prompt_tokens: 0, completion_tokens: 0, cost_micro_usd: 0, by: {} };
      for (const m of ['requests', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'cost_micro_usd']) g.by[m] = new Array(times.length).fill(0);
      groups.set(name, g);
    }
    const i = index.get(r.t);
    for (const m of ['requests', 'prompt_tokens', 'completion_tokens', 'cost_micro_usd']) g[m] += r[m];
    if (i === undefined) continue;
    for (const m of Object.keys(g.by)) g.by[m][i] += r[m];
  }
  const list = [...groups.values()].sort((a, b) => b.cost_micro_usd - a.cost_micro_usd || b.requests - a.requests || (a.name < b.name ? -1 : 1));
  return { times, groups: list };
}

// The biggest groups get a colour each, the rest one series "other".
function seriesOf(groups, metric, times) {
  const shown = groups.slice(0, COLOURS - (groups.length > COLOURS ? 1 : 0));
  const series = shown.map((g, i) => ({ name: g.name === '' ? '(none)' : g.name, cls: `c${i}`, values: g.by[metric] }));
  const rest = groups.slice(shown.length);
  if (rest.length) {
    series.push({ name: `${rest.length} others`, cls: 'cx', values: times.map((_, i) => rest.reduce((a, g) => a + g.by[metric][i], 0)) });
  }
  return series;
}

export async function usage(el, params) {
  const range = RANGES[params.get('range')] ? params.get('range') : '24h';
  const group = DIMENSIONS.includes(params.get('group')) ? params.get('group') : '';
  const filters = Object.fromEntries(DIMENSIONS.map((d) => [d, params.get(d) || '']));

  const rangeSel = h('select', { id: 'usage-range' },
    Object.entries(RANGES).map(([k, r]) => h('option', { value: k, selected: k === range }, r.label)));
  const groupSel = h('select', { id: 'usage-group' },
    h('option', { value: '' }, 'nothing (all usage)'),
    DIMENSIONS.map((d) => h('option', { value: d, selected: d === group }, d)));
  const inputs = Object.fromEntries(DIMENSIONS.map((d) => [d, h('input', { type: 'text', id: `usage-${d}`, value: filters[d], placeholder: `any ${d}` })]));
  const form = h('form', { class: 'card filters', id: 'usage-form', 'aria-label': 'usage query' },
    h('div', { class: 'bar' },
      h('label', { for: 'usage-range' }, 'range'), rangeSel,
      h('label', { for: 'usage-group' }, 'group by'), groupSel,
      h('button', { type: 'submit', class: 'primary' }, 'Show'),
      h('button', { type: 'button', id: 'usage-refresh' }, 'Refresh'),
      h('span', { class: 'muted', id: 'usage-asof', 'aria-live': 'polite' })),
    h('div', { class: 'bar' }, DIMENSIONS.map((d) => h('span', { class: 'field' }, h('label', { for: `usage-${d}` }, d), inputs[d]))));
  const out = h('div', { id: 'usage-out' });
  el.append(h('h1', {}, 'Usage'),
    h('p', { class: 'muted' }, 'Requests, tokens and cost the replicas counted from the upstreams’ reported usage, at the deployments’ prices (flushed every second), per UTC ',
      RANGES[range].bucket, '.'),
    form, out);

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams({ range: rangeSel.value });
    if (groupSel.value) q.set('group', groupSel.value);
    for (const d of DIMENSIONS) if (inputs[d].value.trim()) q.set(d, inputs[d].value.trim());
    location.hash = `#/usage?${q}`;
  });

  async function load() {
    const r = RANGES[range];
    const q = new URLSearchParams({ from: String(Math.floor(Date.now() / 1000) - r.seconds), bucket: r.bucket });
    if (group) q.set('group_by', group);
    for (const d of DIMENSIONS) if (filters[d]) q.set(d, filters[d]);
    let report;
    try {
      report = await get(`/usage?${q}`);
    } catch (err) {
      if (err instanceof ApiError) { replace(out, notice('error', `Refused (${err.status} ${err.code}): ${err.message}`)); return; }
      throw err;
    }
    render(report);
    replace(el.querySelector('#usage-asof'), `as of ${new Date().toISOString().slice(11, 19)}Z`);
  }

  function render(report) {
    const { times, groups } = shape(report, group);
    const label = timeLabel(report.bucket);
    const by = group ? ` by ${group}` : '';
    const tokens = group
      ? seriesOf(groups, 'total_tokens', times)
      : [{ name: 'prompt', cls: 'c0', values: groups[0] ? groups[0].by.prompt_tokens : [] },
        { name: 'completion', cls: 'c1', values: groups[0] ? groups[0].by.completion_tokens : [] }];
    const charts = h('div', { class: 'charts' },
      stackedBars({ id: 'chart-requests', title: `Requests${by}`, times, series: seriesOf(groups, 'requests', times), fmt: count, label, legend: Boolean(group) }),
      stackedBars({ id: 'chart-tokens', title: group ? `Tokens${by}` : 'Tokens (prompt, completion)', times, series: tokens, fmt: count, label, legend: true }),
      stackedBars({ id: 'chart-cost', title: `Cost${by}`, times, series: seriesOf(groups, 'cost_micro_usd', times), fmt: usd, axis: usdTick, label, legend: Boolean(group) }));
    const t = report.total;
    const cells = (x) => [
      h('td', { class: 'num', 'data-requests': x.requests }, String(x.requests)),
      h('td', { class: 'num' }, String(x.prompt_tokens)),
      h('td', { class: 'num' }, String(x.completion_tokens)),
      h('td', { class: 'num', 'data-micro-usd': x.cost_micro_usd }, usd(x.cost_micro_usd))];
    const rows = group ? groups.map((g) => h('tr', { 'data-group': g.name },
      h('th', { scope: 'row' }, g.name === '' ? h('span', { class: 'muted' }, '(none)') : g.name), cells(g))) : [];
    const totals = table([group || '', 'requests', 'prompt tokens', 'completion tokens', 'cost'],
      [...rows, h('tr', { class: 'total', id: 'usage-total' }, h('th', { scope: 'row' }, 'total'), cells(t))],
      { id: 'usage-totals' });
    replace(out,
      report.total.requests ? null : notice('info', 'No usage counted in this range.'),
      charts, h('h2', {}, `Totals, ${RANGES[range].label}`), totals);
    out.dataset.bucket = report.bucket; // what is drawn now (scripts and tests wait for it)
  }

  el.querySelector('#usage-refresh').addEventListener('click', load);
  await load();
  const timer = setInterval(() => {
    if (!el.isConnected) { clearInterval(timer); return; }
    load().catch(() => {});
  }, REFRESH_MS);
  return null;
}
