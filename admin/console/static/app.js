// The console: log in once, then a page per hash route, kept live by the event stream.
import { call, session, ApiError } from './api.js';
import { h, replace, notice } from './dom.js';
import { Live } from './live.js';
import { overview } from './overview.js';
import { versions } from './versions.js';
import { edit } from './edit.js';
import { rollouts } from './rollouts.js';
import { audit } from './audit.js';
import { keys } from './keys.js';
import { usage } from './usage.js';

const PAGES = { overview, versions, edit, rollouts, audit, keys, usage };
const view = document.getElementById('view');
let current = null;
let live = null;

function route() {
  const raw = location.hash.replace(/^#\/?/, '') || 'overview';
  const [name, query] = raw.split('?');
  return { name, params: new URLSearchParams(query || '') };
}

async function show() {
  const { name, params } = route();
  if (!session.csrf || name === 'login') return loginForm(params);
  const page = PAGES[name] || PAGES.overview;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.getAttribute('href') === `#/${name}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const el = h('section', { class: `page page-${name}`, 'aria-label': name });
  replace(view, el);
  document.title = `${name} · configbus console`;
  try {
    current = (await page(el, params)) || null;
  } catch (err) {
    current = null;
    replace(el, notice('error', err.message || String(err)));
  }
}

function loginForm(params) {
  document.getElementById('nav').hidden = true;
  document.getElementById('logout').hidden = true;
  const input = h('input', { id: 'token', type: 'password', name: 'token', autocomplete: 'off', required: true, 'aria-describedby': 'token-help' });
  const msg = h('div', { id: 'login-msg' });
  if (params.has('expired')) msg.append(notice('error', 'That login link was used or has expired (links last one minute). Enter the admin token instead.'));
  const form = h('form', { class: 'card login', id: 'login-form' },
    h('h1', {}, 'Log in'),
    h('label', { for: 'token' }, 'Admin token'),
    input,
    h('p', { id: 'token-help', class: 'muted' },
      'Sent once, in the body of a request, and exchanged for a session cookie (HttpOnly, SameSite=Strict) that ends after 30 idle minutes. The token itself is not kept by the browser.'),
    h('button', { type: 'submit', class: 'primary' }, 'Log in'),
    msg);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    replace(msg);
    try {
      const { data } = await call('POST', '/ui/api/session', { body: { token: input.value } });
      input.value = '';
      start(data);
      location.hash = '#/overview';
    } catch (err) {
      replace(msg, notice('error', err instanceof ApiError ? err.message : String(err)));
    }
  });
  replace(view, form);
  input.focus();
}

function start(s) {
  Object.assign(session, s);
  document.getElementById('nav').hidden = false;
  document.getElementById('logout').hidden = false;
  replace(document.getElementById('who'), h('span', { class: 'muted' }, `${s.name} · `), h('strong', {}, s.role), h('span', { class: 'muted' }, ` · ${s.namespace}`));
  if (live) live.stop();
  live = new Live((kind, data) => {
    if (current && current.onEvent) current.onEvent(kind, data);
  }, document.getElementById('live'));
  live.start();
}

async function logout() {
  try { await call('DELETE', '/ui/api/session'); } catch { /* ended anyway below */ }
  session.csrf = '';
  if (live) live.stop();
  replace(document.getElementById('who'));
  location.hash = '#/login';
  show();
}

async function boot() {
  document.getElementById('logout').addEventListener('click', logout);
  window.addEventListener('hashchange', show);
  window.addEventListener('cb:logged-out', () => { session.csrf = ''; location.hash = '#/login'; });
  try {
    const { data } = await call('GET', '/ui/api/session');
    start(data);
    if (route().name === 'login') location.hash = '#/overview';
  } catch {
    session.csrf = '';
  }
  show();
}

boot();
