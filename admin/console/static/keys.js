// Client keys: list (by team or tag, a page at a time), create (the key shown once),
// rotate (the new key shown once), revoke; each key's usage over the last 24 h, linked to
// its usage over time.
import { call, get, ns, can, ApiError } from './api.js';
import { h, replace, notice, when, table } from './dom.js';
import { usd, count } from './usage.js';

const PAGE = 50;

function state(k) {
  const now = Date.now() / 1000;
  if (k.enabled === false) return ['disabled', 'bad'];
  if (k.expires_at && now >= k.expires_at) return ['expired', 'bad'];
  if (k.previous_expires_at && now < k.previous_expires_at) return ['rotating', 'warn'];
  return ['enabled', 'ok'];
}

function issuesOf(err) {
  return err.issues && err.issues.length
    ? h('ul', { class: 'issues' }, err.issues.map((i) => h('li', { 'data-path': i.path }, h('span', { class: 'path' }, i.path || '(body)'), `: ${i.message}`)))
    : null;
}

function refused(out, err) {
  replace(out, notice('error', `Refused (${err.status || ''} ${err.code || ''}): ${err.message}`, issuesOf(err)));
}

// The key itself, once: selectable text, never stored by the page.
function shownOnce(out, what, data) {
  replace(out, notice('ok',
    h('p', {}, `${what} key ${data.entry.id} (${data.entry.name}).`),
    h('p', {}, h('strong', {}, 'Copy the key now: it is shown this once, only its hash is kept.')),
    h('input', { type: 'text', id: 'new-key', readonly: true, value: data.key, 'aria-label': 'the new key', class: 'mono', size: 60 }),
    h('button', { type: 'button', class: 'small', onclick: (ev) => { replace(out); ev.target.blur(); } }, 'Done, hide it')));
  const input = out.querySelector('#new-key');
  input.focus();
  input.select();
}

// The last 24 h of every key, in one usage query grouped by key (a query per key would read
// every minute bucket of the day once per key). Keys without usage: zero. null: no answer.
async function usageByKey(team) {
  const q = new URLSearchParams({ from: String(Math.floor(Date.now() / 1000) - 86_400), group_by: 'key' });
  if (team) q.set('team', team);
  try {
    const report = await get(`/usage?${q}`);
    return new Map(report.rows.map((r) => [r.key, r]));
  } catch (err) {
    if (err instanceof ApiError) return null;
    throw err;
  }
}

const ZERO = { requests: 0, total_tokens: 0, cost_micro_usd: 0 };

function usageCell(k, u) {
  const link = h('a', { href: `#/usage?${new URLSearchParams({ range: '24h', key: k.id })}`, 'aria-label': `usage of ${k.name} over time` }, 'over time');
  if (!u) return h('td', { class: 'key-usage muted' }, '—');
  return h('td', { class: 'key-usage', 'data-requests': u.requests, 'data-tokens': u.total_tokens, 'data-micro-usd': u.cost_micro_usd },
    h('div', {}, `${count(u.requests)} req · ${count(u.total_tokens)} tok`), h('div', {}, usd(u.cost_micro_usd), ' · ', link));
}

function csv(text) {
  return text.split(',').map((s) => s.trim()).filter(Boolean);
}

export async function keys(el) {
  const writable = can('publish');
  const out = h('div', { id: 'keys-result', 'aria-live': 'polite' });
  const list = h('div', { id: 'keys-list' });
  const team = h('input', { type: 'text', id: 'keys-team', placeholder: 'any team' });
  const tag = h('input', { type: 'text', id: 'keys-tag', placeholder: 'any tag' });
  const more = h('button', { type: 'button', id: 'keys-next' }, 'Next page');
  const first = h('button', { type: 'button', id: 'keys-first' }, 'First page');
  const shown = h('span', { class: 'muted', id: 'keys-count' });
  const filters = h('form', { class: 'bar filters', id: 'keys-filters', 'aria-label': 'filters' },
    h('label', { for: 'keys-team' }, 'team'), team, h('label', { for: 'keys-tag' }, 'tag'), tag,
    h('button', { type: 'submit' }, 'Filter'), shown);

  const f = {
    name: h('input', { type: 'text', id: 'key-name', required: true, disabled: !writable }),
    team: h('input', { type: 'text', id: 'key-team', disabled: !writable }),
    tags: h('input', { type: 'text', id: 'key-tags', placeholder: 'a,b', disabled: !writable }),
    models: h('input', { type: 'text', id: 'key-models', placeholder: '* (every model)', disabled: !writable }),
    rpm: h('input', { type: 'number', id: 'key-rpm', min: '1', disabled: !writable }),
  };
  const create = h('form', { class: 'card', id: 'key-form' },
    h('h2', {}, 'Create a key'),
    writable ? null : notice('info', 'Your role may not create, rotate or revoke keys.'),
    h('div', { class: 'bar' },
      h('label', { for: 'key-name' }, 'name'), f.name,
      h('label', { for: 'key-team' }, 'team'), f.team,
      h('label', { for: 'key-tags' }, 'tags'), f.tags),
    h('div', { class: 'bar' },
      h('label', { for: 'key-models' }, 'models'), f.models,
      h('label', { for: 'key-rpm' }, 'requests per minute'), f.rpm,
      h('button', { type: 'submit', id: 'create-key', class: 'primary', disabled: !writable }, 'Create key')));
  el.append(h('h1', {}, 'Keys'),
    h('p', { class: 'muted' }, 'Client keys of the collection beside the document. The keys themselves are never shown again after they are made; their hashes and first characters are.'),
    out, create, filters, list, h('div', { class: 'bar' }, first, more));

  let cursor = null;
  let next = null;

  function actions(k) {
    const rotateBtn = h('button', { type: 'button', class: 'small', 'data-rotate': k.id, disabled: !writable }, 'Rotate');
    const revokeBtn = h('button', { type: 'button', class: 'small danger', 'data-revoke': k.id, disabled: !writable }, 'Revoke');
    rotateBtn.addEventListener('click', () => rotateForm(k));
    revokeBtn.addEventListener('click', () => revokeForm(k));
    return [rotateBtn, ' ', revokeBtn];
  }

  function rotateForm(k) {
    const grace = h('input', { type: 'number', id: 'rotate-grace', min: '0', value: '3600', 'aria-label': 'grace in seconds' });
    const form = h('form', { class: 'inline', id: 'rotate-form' },
      h('span', {}, `Rotate ${k.id} (${k.name}): a new key; the old one keeps working for`), grace, h('span', {}, 'seconds.'),
      h('button', { type: 'submit', class: 'primary' }, 'Rotate'),
      h('button', { type: 'button', onclick: () => replace(out) }, 'Cancel'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        const { data } = await call('POST', ns(`/keys/${encodeURIComponent(k.id)}/rotate`), { body: { grace_s: Number(grace.value || 0) }, headers: { 'If-Match': `"${k.revision}"` } });
        shownOnce(out, 'Rotated', data);
        await load(cursor);
      } catch (err) { refused(out, err); }
    });
    replace(out, form);
    grace.focus();
  }

  function revokeForm(k) {
    const form = h('form', { class: 'inline', id: 'revoke-form' },
      h('span', {}, `Revoke ${k.id} (${k.name}): it answers 401 on every replica.`),
      h('button', { type: 'submit', class: 'danger' }, `Revoke ${k.name}`),
      h('button', { type: 'button', onclick: () => replace(out) }, 'Cancel'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        const { data } = await call('DELETE', ns(`/keys/${encodeURIComponent(k.id)}`), { headers: { 'If-Match': `"${k.revision}"` } });
        replace(out, notice('ok', `Revoked ${data.id} (collection revision ${data.revision}).`));
        await load(cursor);
      } catch (err) { refused(out, err); }
    });
    replace(out, form);
    form.querySelector('button[type=submit]').focus();
  }

  async function load(from) {
    const q = new URLSearchParams({ count: String(PAGE) });
    if (from) q.set('cursor', from);
    if (team.value.trim()) q.set('team', team.value.trim());
    if (tag.value.trim()) q.set('tag', tag.value.trim());
    let page;
    try {
      page = await get(`/keys?${q}`);
    } catch (err) {
      if (err instanceof ApiError) { refused(list, err); return; }
      throw err;
    }
    cursor = from;
    next = page.next_cursor;
    shown.textContent = `${page.keys.length} key${page.keys.length === 1 ? '' : 's'} on this page`;
    const used = await usageByKey(team.value.trim());
    const rows = page.keys.map((k) => {
      const [word, badge] = state(k);
      return h('tr', { 'data-key': k.id, 'data-name': k.name },
        h('th', { scope: 'row' }, h('code', {}, k.id)), h('td', {}, k.name), h('td', {}, k.team || '—'),
        h('td', {}, (k.tags || []).map((t) => h('span', { class: 'chip' }, t))),
        h('td', {}, (k.models || ['*']).join(', ')),
        h('td', {}, h('code', {}, k.key_prefix ? `${k.key_prefix}…` : `sha256 ${k.key_sha256.slice(0, 12)}…`)),
        h('td', {}, h('span', { class: `badge ${badge}` }, word)),
        h('td', {}, when(k.created_at)),
        usageCell(k, used && (used.get(k.id) || ZERO)),
        h('td', {}, actions(k)));
    });
    replace(list, rows.length
      ? table(['id', 'name', 'team', 'tags', 'models', 'key', 'state', 'created', 'last 24 h', ''], rows, { id: 'keys-table' })
      : notice('info', 'No keys here.'));
    more.hidden = !next;
    first.hidden = !from;
  }

  create.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { name: f.name.value.trim() };
    if (f.team.value.trim()) body.team = f.team.value.trim();
    if (csv(f.tags.value).length) body.tags = csv(f.tags.value);
    if (csv(f.models.value).length) body.models = csv(f.models.value);
    if (f.rpm.value) body.rate_limit = { rpm: Number(f.rpm.value) };
    try {
      const { data } = await call('POST', ns('/keys'), { body });
      for (const input of Object.values(f)) input.value = '';
      shownOnce(out, 'Created', data);
      await load(null);
    } catch (err) { refused(out, err); }
  });
  filters.addEventListener('submit', (ev) => { ev.preventDefault(); load(null); });
  more.addEventListener('click', () => load(next));
  first.addEventListener('click', () => load(null));
  await load(null);
  return null;
}
