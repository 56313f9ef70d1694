// The audit stream, newest first, filtered here by actor, action and outcome (the API
// pages it; it has no filter of its own).
import { get } from './api.js';
import { h, replace, when, table } from './dom.js';

export async function audit(el) {
  let entries = [];
  let next = null;
  const filters = {
    actor: h('select', { id: 'filter-actor' }),
    action: h('select', { id: 'filter-action' }),
    outcome: h('select', { id: 'filter-outcome' }),
  };
  const out = h('div', { id: 'audit-table' });
  const more = h('button', { type: 'button', id: 'audit-more' }, 'Load older entries');
  const count = h('span', { class: 'muted', id: 'audit-count' });
  el.append(h('h1', {}, 'Audit'),
    h('form', { class: 'bar filters', 'aria-label': 'filters' },
      Object.entries(filters).map(([k, s]) => [h('label', { for: s.id }, k), s]), count),
    out, more);

  function options() {
    for (const [k, s] of Object.entries(filters)) {
      const chosen = s.value;
      const values = [...new Set(entries.map((e) => e[k]))].sort();
      replace(s, h('option', { value: '' }, `any ${k}`), values.map((v) => h('option', { value: v, selected: v === chosen }, v)));
    }
  }

  function render() {
    const shown = entries.filter((e) => Object.entries(filters).every(([k, s]) => !s.value || e[k] === s.value));
    count.textContent = `${shown.length} of ${entries.length} entries loaded`;
    replace(out, table(['time', 'actor', 'action', 'outcome', 'details'], shown.map((e) => h('tr', { 'data-action': e.action },
      h('td', {}, when(e.ts)), h('td', {}, e.actor), h('td', {}, e.action),
      h('td', {}, h('span', { class: `badge ${e.outcome === 'ok' ? 'ok' : 'bad'}` }, e.outcome)),
      h('td', { class: 'details' }, Object.entries(e.fields || {}).filter(([, v]) => v !== '').map(([k, v]) => h('span', { class: 'kv' }, `${k}=${v}`)))))));
    more.hidden = !next;
  }

  async function load(before) {
    const page = await get(`/audit?count=500${before ? `&before=${encodeURIComponent(before)}` : ''}`);
    entries = before ? entries.concat(page.entries) : page.entries;
    next = page.next_before;
    options();
    render();
  }

  for (const s of Object.values(filters)) s.addEventListener('change', render);
  more.addEventListener('click', () => load(next));
  await load(null);
  return null;
}
