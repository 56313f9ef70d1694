// Edit the head document as YAML, validated by the server before anything is published,
// with If-Match on the version the edit started from.
import { call, get, ns, can, ApiError } from './api.js';
import { h, replace, notice } from './dom.js';
import { dump } from './yaml.js';
import { checked, showIssues } from './issues.js';
import { renderDiff } from './versions.js';

export async function edit(el) {
  const writable = can('publish') && can('validate');
  const textarea = h('textarea', { id: 'editor', spellcheck: 'false', rows: 28, 'aria-label': 'document (YAML)', readonly: !writable });
  const message = h('input', { type: 'text', id: 'publish-message', placeholder: 'why (kept in history)', 'aria-label': 'message', disabled: !writable });
  const validateBtn = h('button', { type: 'button', id: 'validate', disabled: !writable }, 'Validate');
  const publishBtn = h('button', { type: 'submit', id: 'publish', class: 'primary', disabled: !writable }, 'Publish');
  const reloadBtn = h('button', { type: 'button', id: 'reload' }, 'Load head');
  const baseEl = h('span', { id: 'base' });
  const news = h('div', { id: 'edit-news' });
  const out = h('div', { id: 'edit-result', 'aria-live': 'polite' });
  const conflict = h('div', { id: 'conflict' });
  let base = 0;

  const form = h('form', { class: 'editor' },
    h('div', { class: 'bar' }, h('span', {}, 'Editing on top of version ', baseEl), reloadBtn),
    textarea,
    h('div', { class: 'bar' }, message, validateBtn, publishBtn));
  el.append(h('h1', {}, 'Edit & publish'),
    writable ? null : notice('info', 'Your role may not publish: the editor is read-only and the server would refuse a publish anyway.'),
    news, form, out, conflict);

  async function loadHead() {
    try {
      const v = await get('/config');
      base = v.version;
      textarea.value = dump(v.document);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
      base = 0;
      textarea.value = '';
    }
    baseEl.textContent = String(base);
    replace(news);
    replace(conflict);
  }

  validateBtn.addEventListener('click', async () => {
    if (await checked(textarea, out)) replace(out, notice('ok', 'Valid: the server accepts this document.'));
  });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    replace(conflict);
    const parsed = await checked(textarea, out);
    if (!parsed) return;
    try {
      const { data, status } = await call('PUT', ns('/config'), {
        body: { document: parsed.document, message: message.value },
        headers: { 'If-Match': `"${base}"` },
      });
      if (status === 201) {
        replace(out, notice('ok', `Published version ${data.version}. `, h('a', { href: '#/overview' }, 'Watch the replicas converge')));
        base = data.version;
        baseEl.textContent = String(base);
        message.value = '';
        replace(news);
      } else {
        replace(out, notice('info', `Nothing changed: version ${data.version} already holds this document.`));
      }
    } catch (err) {
      if (err instanceof ApiError && err.code === 'version_conflict') {
        const now = err.currentVersion;
        replace(out, notice('error', `Not published: version ${now} was published after version ${base}, which this edit started from. What changed meanwhile:`));
        const target = h('div', {});
        const rebase = h('button', { type: 'button', id: 'rebase', onclick: () => { base = now; baseEl.textContent = String(base); replace(conflict); replace(out, notice('info', `Your edit now targets version ${now}; publish again to replace it.`)); } }, `Keep my edit, publish over version ${now}`);
        const discard = h('button', { type: 'button', onclick: () => loadHead() }, `Discard my edit, load version ${now}`);
        replace(conflict, h('div', { class: 'bar' }, rebase, discard), target);
        await renderDiff(target, base, now);
      } else if (err instanceof ApiError && err.issues.length) {
        showIssues(out, err.issues, parsed.lines, textarea, `Refused (${err.code}); nothing was published.`);
      } else {
        replace(out, notice('error', `Refused (${err.status || ''} ${err.code || ''}): ${err.message}`));
      }
    }
  });
  reloadBtn.addEventListener('click', () => loadHead());

  await loadHead();
  return {
    onEvent(kind, data) {
      if (kind === 'head' && data.version && data.version !== base) {
        replace(news, notice('info', `Version ${data.version} was published since this edit started from version ${base}. Publishing now will show what changed.`));
      }
    },
  };
}
