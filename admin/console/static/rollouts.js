// Start a canary, follow each stage with the guard's figures live, promote or abort.
import { call, get, ns, can, ApiError } from './api.js';
import { h, replace, notice, when, pct, table } from './dom.js';
import { dump } from './yaml.js';
import { checked, showIssues } from './issues.js';

const sel = (s) => (s.share !== null && s.share !== undefined ? `${s.share}%` : Object.entries(s.labels || {}).map(([k, v]) => `${k}=${v}`).join(','));
const ms = (x) => (x === null || x === undefined ? '∞' : `${x} ms`);
const BADGE = { running: 'info', promoted: 'ok', aborted: 'bad' };

function figures(a) {
  const v = a.verdict;
  const rows = [
    ['requests', v ? String(v.stage_requests) : '0', v ? String(v.baseline_requests) : '0'],
    ['error rate', v ? pct(v.stage_error_rate) : '—', v ? pct(v.baseline_error_rate) : '—'],
    ['latency p99', v ? ms(v.stage_p99_ms) : '—', v ? ms(v.baseline_p99_ms) : '—'],
    ['replicas', a.stage_replicas.join(', ') || '—', a.baseline_replicas.join(', ') || '—'],
  ];
  return table(['', 'stage (new version)', 'baseline (head)'], rows.map((r) => h('tr', {}, h('th', { scope: 'row' }, r[0]), h('td', {}, r[1]), h('td', {}, r[2]))), { id: 'guard-figures' });
}

function current(view, out, reload) {
  const r = view.rollout;
  const a = view.assessment;
  const running = r.state === 'running';
  const steer = async (what) => {
    try {
      await call('POST', ns(`/rollout/${what}`), { body: { message: `${what} from the console` } });
      await reload();
    } catch (err) { replace(out, notice('error', `Refused (${err.status} ${err.code}): ${err.message}`)); }
  };
  return h('section', { class: 'card', id: 'rollout', 'data-state': r.state },
    h('h2', {}, `Rollout ${r.id} · version ${r.version} `, h('span', { class: `badge ${BADGE[r.state] || 'info'}`, id: 'rollout-state' }, r.state)),
    h('p', { class: 'muted' }, `by ${r.author} · started ${when(r.started_at)} · over head ${r.base}${r.message ? ` · “${r.message}”` : ''}`),
    h('ol', { class: 'stages' }, r.stages.map((s, i) => h('li', { class: i === r.stage ? 'current' : i < r.stage ? 'done' : '' },
      `stage ${i + 1}: ${sel(s.selector)}, bake ${s.bake_s} s`, i === r.stage && running ? h('strong', {}, ' ← now') : null))),
    r.reason ? h('p', { id: 'rollout-reason', class: r.state === 'aborted' ? 'reason bad' : 'reason' }, r.reason) : null,
    a ? h('div', { id: 'assessment' },
      h('p', {}, h('strong', {}, `guard: ${a.action}`), ` — ${a.reason}`, h('span', { class: 'muted' }, ` (baked ${Math.round(a.baked_s)} s of ${r.stages[r.stage].bake_s} s)`)),
      figures(a)) : null,
    running ? h('div', { class: 'bar' },
      h('button', { type: 'button', id: 'promote', class: 'primary', disabled: !can('steer'), onclick: () => steer('promote') }, 'Promote now'),
      h('button', { type: 'button', id: 'abort', class: 'danger', disabled: !can('steer'), onclick: () => steer('abort') }, 'Abort')) : null);
}

function parseStages(text) {
  return text.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => {
    const [selector, bake] = l.split(/\s+/);
    return { selector, bake_s: bake === undefined ? 60 : Number(bake.replace(/s$/, '')) };
  });
}

export async function rollouts(el) {
  const writable = can('publish') && can('validate');
  const status = h('div', { id: 'rollout-status' });
  const out = h('div', { id: 'rollout-result', 'aria-live': 'polite' });
  const yaml = h('textarea', { id: 'rollout-doc', rows: 16, spellcheck: 'false', 'aria-label': 'new document (YAML)', readonly: !writable });
  const stages = h('textarea', { id: 'rollout-stages', rows: 3, 'aria-label': 'stages, one a line: selector and bake seconds', disabled: !writable }, 'tier=canary 30\n100% 30');
  const maxErr = h('input', { id: 'guard-max-error', type: 'number', step: '0.01', min: '0', max: '1', value: '0.05', disabled: !writable });
  const minReq = h('input', { id: 'guard-min-requests', type: 'number', min: '1', value: '20', disabled: !writable });
  const message = h('input', { id: 'rollout-message', type: 'text', placeholder: 'why (kept in history)', 'aria-label': 'message', disabled: !writable });
  const startBtn = h('button', { type: 'submit', id: 'start-rollout', class: 'primary', disabled: !writable }, 'Start rollout');
  const form = h('form', { class: 'card', id: 'rollout-form' },
    h('h2', {}, 'Start a canary'),
    writable ? null : notice('info', 'Your role may not start a rollout.'),
    h('label', { for: 'rollout-doc' }, 'New document (YAML; starts as head)'), yaml,
    h('label', { for: 'rollout-stages' }, 'Stages, one a line: selector (tier=canary or 10%) and bake seconds'), stages,
    h('div', { class: 'bar' },
      h('label', { for: 'guard-max-error' }, 'abort above error rate'), maxErr,
      h('label', { for: 'guard-min-requests' }, 'after requests'), minReq),
    h('div', { class: 'bar' }, message, startBtn));
  // Head's document goes in before the form is shown, so nothing typed is overwritten.
  try { yaml.value = dump((await get('/config')).document); } catch { yaml.value = ''; }
  el.append(h('h1', {}, 'Rollouts'), status, out, form);

  async function reload() {
    try {
      replace(status, current(await get('/rollout'), out, reload));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) replace(status, notice('info', 'No rollout has run in this namespace yet.'));
      else throw err;
    }
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const parsed = await checked(yaml, out);
    if (!parsed) return;
    const head = (await get('/replicas')).summary.head;
    try {
      const { data, status: code } = await call('POST', ns('/rollouts'), {
        body: {
          document: parsed.document, message: message.value, stages: parseStages(stages.value),
          guard: { max_error_rate: Number(maxErr.value), min_requests: Number(minReq.value) },
        },
        headers: { 'If-Match': `"${head}"` },
      });
      if (code !== 201) {
        replace(out, notice('info', `Nothing to roll out: version ${data.version} already holds this document.`));
        return;
      }
      replace(out, notice('ok', `Rollout started: version ${data.version}.`));
      await reload();
    } catch (err) {
      if (err instanceof ApiError && err.issues.length) showIssues(out, err.issues, parsed.lines, yaml, `Refused (${err.code}).`);
      else replace(out, notice('error', `Refused (${err.status || ''} ${err.code || ''}): ${err.message}`));
    }
  });

  await reload();
  return { onEvent: (kind) => { if (kind === 'rollout' || kind === 'head') reload().catch(() => {}); } };
}
