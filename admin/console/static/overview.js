// Head, epoch, and the replicas grouped by the version they run, live.
import { get, ApiError } from './api.js';
import { h, replace, ago, table, notice } from './dom.js';

function state(r) {
  if (!r.alive) return ['dead', 'dead'];
  if (r.state === 'rejected' || r.rejected_version !== null) return ['rejected', 'bad'];
  if (r.stale) return ['stale', 'warn'];
  if (r.state === 'pending') return ['pending', 'warn'];
  return ['applied', 'ok'];
}

function labels(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h('span', { class: 'muted' }, '—');
  return entries.map(([k, v]) => h('span', { class: 'chip' }, `${k}=${v}`));
}

function replicaRow(r) {
  const [text, cls] = state(r);
  const why = r.rejected_version !== null
    ? `rejected version ${r.rejected_version}${r.reason ? `: ${r.reason}` : ''}`
    : (r.reason || '');
  return h('tr', { 'data-replica': r.replica_id, 'data-state': text },
    h('th', { scope: 'row' }, r.replica_id),
    h('td', {}, h('span', { class: `badge ${cls}` }, text), why ? h('div', { class: 'reason' }, why) : null),
    h('td', {}, labels(r.labels)),
    h('td', {}, r.staged ? h('span', { class: 'badge info' }, 'rollout') : h('span', { class: 'muted' }, 'head')),
    h('td', {}, ago(r.last_seen)));
}

export async function overview(el) {
  const heading = h('h1', {}, 'Overview');
  const body = h('div', { id: 'overview' });
  el.append(heading, body);

  async function load() {
    const rep = await get('/replicas');
    let rollout = null;
    try { rollout = await get('/rollout'); } catch (e) { if (!(e instanceof ApiError && e.status === 404)) throw e; }
    const s = rep.summary;
    const byVersion = new Map();
    for (const r of rep.replicas) {
      const list = byVersion.get(r.version) || [];
      list.push(r);
      byVersion.set(r.version, list);
    }
    const groups = [...byVersion.entries()].sort((a, b) => b[0] - a[0]).map(([v, list]) => h('section', { class: 'group', 'data-version': v },
      h('h2', {}, `Version ${v}`, v === s.head ? h('span', { class: 'badge ok' }, 'head') : null,
        h('span', { class: 'muted' }, ` · ${list.filter((r) => r.alive).length} live of ${list.length}`)),
      table(['replica', 'state', 'labels', 'runs', 'last seen'], list.map(replicaRow))));
    const moving = rollout && rollout.rollout.state === 'running'
      ? notice('info', `Rollout ${rollout.rollout.id} of version ${rollout.rollout.version} is running (stage ${rollout.rollout.stage + 1} of ${rollout.rollout.stages.length}). `, h('a', { href: '#/rollouts' }, 'Follow it'))
      : null;
    replace(body,
      h('dl', { class: 'facts' },
        h('div', {}, h('dt', {}, 'head'), h('dd', { id: 'head-version' }, String(s.head))),
        h('div', {}, h('dt', {}, 'epoch'), h('dd', { class: 'mono', id: 'epoch' }, s.epoch || '—')),
        h('div', {}, h('dt', {}, 'replicas'), h('dd', {}, `${s.alive} live, ${s.dead} dead, ${s.rejected} rejecting`)),
        h('div', {}, h('dt', {}, 'converged'), h('dd', { id: 'converged', 'data-converged': String(s.all_on_head) }, s.all_on_head ? 'yes: every live replica runs head' : 'not yet'))),
      moving,
      groups.length ? groups : notice('info', 'No replica has reported yet.'));
  }

  await load();
  return { onEvent: (kind) => { if (kind !== 'unavailable') load().catch(() => {}); } };
}
