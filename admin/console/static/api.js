// The admin API, same origin, with the session cookie; writes carry the CSRF header.

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || 'http_error';
    this.issues = e.issues || [];
    this.currentVersion = e.current_version;
  }
}

export const session = { csrf: '', namespace: 'default', permissions: [], name: '', role: '' };

export function can(permission) {
  return session.permissions.includes(permission);
}

export async function call(method, path, { body, headers = {} } = {}) {
  const h = { Accept: 'application/json', ...headers };
  if (body !== undefined) h['Content-Type'] = 'application/json';
  if (!['GET', 'HEAD'].includes(method)) h['X-CSRF-Token'] = session.csrf;
  const resp = await fetch(path, {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    cache: 'no-store',
  });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    const err = new ApiError(resp.status, data);
    if (resp.status === 401 && path.startsWith('/v1/')) window.dispatchEvent(new CustomEvent('cb:logged-out'));
    throw err;
  }
  return { data, etag: resp.headers.get('ETag'), status: resp.status };
}

export function ns(path) {
  return `/v1/namespaces/${encodeURIComponent(session.namespace)}${path}`;
}

export const get = (path) => call('GET', ns(path)).then((r) => r.data);
