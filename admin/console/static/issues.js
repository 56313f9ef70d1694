// Parse the editor's YAML on the server, validate it through the API, and list every issue
// at its path (and the line that path starts on). Shared by the editor and the rollouts page.
import { call, ns, ApiError } from './api.js';
import { h, replace, notice } from './dom.js';

function lineOf(path, lines) {
  let p = path;
  while (p) {
    if (lines[p] !== undefined) return lines[p];
    p = p.replace(/(\.[^.[\]]+|\[\d+\])$/, '');
    if (p === path) break;
  }
  return lines[''];
}

export function jumpTo(textarea, line) {
  const text = textarea.value;
  let pos = 0;
  for (let i = 1; i < line && pos >= 0; i++) pos = text.indexOf('\n', pos) + 1;
  const end = text.indexOf('\n', pos);
  textarea.focus();
  textarea.setSelectionRange(pos, end < 0 ? text.length : end);
}

export function showIssues(out, issues, lines, textarea, title) {
  const items = issues.map((i) => {
    const line = lineOf(i.path, lines || {});
    return h('li', { 'data-path': i.path },
      h('button', { type: 'button', class: 'link', onclick: () => line && jumpTo(textarea, line), title: line ? `go to line ${line}` : '' },
        h('code', { class: 'path' }, i.path || '(document)')),
      line ? h('span', { class: 'muted' }, ` line ${line}`) : null,
      ': ', h('span', { class: 'issue-msg' }, i.message));
  });
  replace(out, h('div', { class: 'notice error', role: 'alert' }, h('strong', {}, title), h('ul', { class: 'issues', id: 'issues' }, items)));
}

// The document in `textarea` as JSON, checked by the server; null (issues shown) when not.
export async function checked(textarea, out, { validate = true } = {}) {
  replace(out);
  let parsed;
  try {
    parsed = (await call('POST', '/ui/api/parse', { body: { text: textarea.value } })).data;
  } catch (err) {
    if (err instanceof ApiError && err.issues.length) showIssues(out, err.issues, {}, textarea, 'Not valid YAML; nothing was published.');
    else replace(out, notice('error', err.message));
    return null;
  }
  if (!validate) return parsed;
  try {
    await call('POST', ns('/validate'), { body: { document: parsed.document } });
  } catch (err) {
    if (err instanceof ApiError && err.issues.length) {
      showIssues(out, err.issues, parsed.lines, textarea, `${err.issues.length} issue(s); nothing was published.`);
    } else replace(out, notice('error', `${err.code || ''}: ${err.message}`));
    return null;
  }
  return parsed;
}
