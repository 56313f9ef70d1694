// Server-sent events from the admin; polling when the browser or the server cannot stream.
import { get, ns } from './api.js';
import { replace, h } from './dom.js';

const POLL_MS = 3000;

export class Live {
  constructor(onEvent, statusEl) {
    this.onEvent = onEvent;
    this.statusEl = statusEl;
    this.es = null;
    this.timer = null;
    this.head = null;
    this.failures = 0;
  }

  status(text, cls) {
    replace(this.statusEl, h('span', { class: `dot ${cls}`, 'aria-hidden': 'true' }), text);
    this.statusEl.dataset.state = cls;
  }

  start() {
    if (!window.EventSource) return this.poll();
    const es = new EventSource(ns('/events'));
    this.es = es;
    es.onopen = () => { this.failures = 0; this.status('live', 'on'); };
    for (const kind of ['head', 'replicas', 'rollout']) {
      es.addEventListener(kind, (e) => this.onEvent(kind, JSON.parse(e.data)));
    }
    es.addEventListener('unavailable', () => this.status('Redis unavailable', 'warn'));
    es.onerror = () => {
      // The stream ends every few seconds on purpose and reconnects; only a stream that
      // keeps failing (or was refused) means falling back to polling.
      this.failures += 1;
      if (es.readyState === EventSource.CLOSED || this.failures > 5) {
        es.close();
        this.es = null;
        this.poll();
      }
    };
    return null;
  }

  poll() {
    this.status('polling', 'warn');
    const tick = async () => {
      try {
        const r = await get('/replicas');
        if (this.head !== r.summary.head) {
          this.head = r.summary.head;
          this.onEvent('head', { version: r.summary.head, epoch: r.summary.epoch });
        }
        this.onEvent('replicas', {});
        this.onEvent('rollout', {});
      } catch { this.status('offline', 'off'); }
    };
    tick();
    this.timer = setInterval(tick, POLL_MS);
  }

  stop() {
    if (this.es) this.es.close();
    if (this.timer) clearInterval(this.timer);
    this.es = null;
    this.timer = null;
  }
}
