// Keys and usage arrive with the client-keys issue; until then the page says so plainly.
import { h } from './dom.js';

const TEXT = {
  keys: 'Client keys (create with the key shown once, revoke, rotate, usage per key) come with the client-keys feature. Today client keys are hashes in the document’s clients section: edit them on the Edit & publish page.',
  usage: 'Usage over time (requests, tokens and cost by key, team, model and provider) comes with the client-keys feature, which adds the usage counts this page will chart.',
};

export function later(name) {
  return async (el) => {
    el.append(
      h('h1', {}, name === 'keys' ? 'Keys' : 'Usage'),
      h('div', { class: 'card later', id: `later-${name}` }, h('p', {}, 'Not available yet.'), h('p', { class: 'muted' }, TEXT[name])));
    return null;
  };
}
