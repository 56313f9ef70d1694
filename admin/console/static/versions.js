// Version history: view any version (secrets masked), diff any two side by side, roll back.
import { get, call, ns, can, ApiError } from './api.js';
import { h, replace, when, table, notice } from './dom.js';
import { dump } from './yaml.js';
import { sideBySide, fold } from './diff.js';

function diffTable(rows, a, b) {
  return h('div', { class: 'scroll' }, h('table', { class: 'diff', id: 'diff-table' },
    h('thead', {}, h('tr', {}, h('th', { colspan: 2, scope: 'col' }, `version ${a}`), h('th', { colspan: 2, scope: 'col' }, `version ${b}`))),
    h('tbody', {}, rows.map((r) => (r.kind === 'skip'
      ? h('tr', { class: 'skip' }, h('td', { colspan: 4 }, `… ${r.count} unchanged lines …`))
      : h('tr', { class: r.kind },
        h('td', { class: 'ln' }, r.ln ?? ''), h('td', { class: `code ${r.kind === 'same' ? '' : 'old'}` }, r.left ?? ''),
        h('td', { class: 'ln' }, r.rn ?? ''), h('td', { class: `code ${r.kind === 'same' ? '' : 'new'}` }, r.right ?? '')))))));
}

export async function renderDiff(target, a, b) {
  const [va, vb, d] = await Promise.all([get(`/versions/${a}`), get(`/versions/${b}`), get(`/diff?from=${a}&to=${b}`)]);
  const rows = fold(sideBySide(dump(va.document), dump(vb.document)));
  replace(target,
    h('h2', {}, `Diff: version ${a} → version ${b}`),
    d.changes.length
      ? h('ul', { class: 'changes', id: 'diff-changes' }, d.changes.map((c) => h('li', {}, h('span', { class: `badge ${c.change === 'removed' ? 'bad' : c.change === 'added' ? 'ok' : 'warn'}` }, c.change), ' ', h('code', {}, c.path))))
      : notice('info', 'The two versions hold the same document.'),
    diffTable(rows, a, b));
}

function rollbackForm(v, head, out) {
  const msg = h('input', { type: 'text', id: `rollback-msg-${v}`, 'aria-label': 'why (kept in history)', placeholder: 'why (kept in history)' });
  const form = h('form', { class: 'inline', id: 'rollback-form' },
    h('span', {}, `Roll back to version ${v}: publishes its document again as a new version.`), msg,
    h('button', { type: 'submit', class: 'danger' }, `Roll back to ${v}`),
    h('button', { type: 'button', onclick: () => replace(out) }, 'Cancel'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const { data } = await call('POST', ns('/rollback'), { body: { to_version: v, message: msg.value }, headers: { 'If-Match': `"${head}"` } });
      replace(out, notice('ok', `Rolled back: version ${data.version} now carries the document of version ${v}.`));
    } catch (err) {
      replace(out, notice('error', `Refused (${err.status || ''} ${err.code || ''}): ${err.message}`));
    }
  });
  replace(out, form);
  msg.focus();
}

export async function versions(el, params) {
  const list = h('div', { id: 'versions-list' });
  const action = h('div', { id: 'version-action' });
  const detail = h('div', { id: 'version-detail' });
  const pick = { a: null, b: null };
  const diffBtn = h('button', { type: 'button', id: 'diff-button', class: 'primary', disabled: true }, 'Diff selected');
  el.append(h('h1', {}, 'Versions'),
    h('p', { class: 'muted' }, 'Pick an older (A) and a newer (B) version to compare them side by side.'),
    diffBtn, list, action, detail);
  let head = 0;

  diffBtn.addEventListener('click', () => {
    location.hash = `#/versions?diff=${Math.min(pick.a, pick.b)},${Math.max(pick.a, pick.b)}`;
  });

  async function load() {
    // Head is not the newest version while a rollout's version waits (or was aborted).
    const [page, rep] = await Promise.all([get('/versions?limit=200'), get('/replicas')]);
    head = rep.summary.head;
    const rows = page.versions.map((v) => h('tr', { 'data-version': v.version },
      h('td', {}, h('input', { type: 'radio', name: 'pick-a', 'aria-label': `A: version ${v.version}`, value: v.version, onchange: () => { pick.a = v.version; diffBtn.disabled = !(pick.a && pick.b && pick.a !== pick.b); } })),
      h('td', {}, h('input', { type: 'radio', name: 'pick-b', 'aria-label': `B: version ${v.version}`, value: v.version, onchange: () => { pick.b = v.version; diffBtn.disabled = !(pick.a && pick.b && pick.a !== pick.b); } })),
      h('th', { scope: 'row' }, h('a', { href: `#/versions?view=${v.version}` }, String(v.version)), v.version === head ? h('span', { class: 'badge ok' }, 'head') : null),
      h('td', {}, v.kind, v.source ? ` of ${v.source}` : ''),
      h('td', {}, v.author),
      h('td', { class: 'msg' }, v.message),
      h('td', {}, when(v.created_at)),
      h('td', {}, h('button', { type: 'button', class: 'small', disabled: !can('rollback') || v.version === head, title: can('rollback') ? '' : 'your role may not roll back', onclick: () => rollbackForm(v.version, head, action) }, 'Roll back to this'))));
    replace(list, table(['A', 'B', 'version', 'kind', 'author', 'message', 'created', ''], rows, { id: 'versions-table' }));
  }

  await load();
  if (params.has('view')) {
    const n = Number(params.get('view'));
    const v = await get(`/versions/${n}`);
    replace(detail, h('h2', {}, `Version ${n}`, h('span', { class: 'muted' }, ` · ${v.kind} by ${v.author} · ${when(v.created_at)} · secrets masked`)),
      h('pre', { class: 'code', id: 'version-yaml', tabindex: 0 }, dump(v.document)));
  } else if (params.has('diff')) {
    const [a, b] = params.get('diff').split(',').map(Number);
    try { await renderDiff(detail, a, b); } catch (err) { replace(detail, notice('error', err instanceof ApiError ? err.message : String(err))); }
  }
  return { onEvent: (kind) => { if (kind === 'head') load().catch(() => {}); } };
}
