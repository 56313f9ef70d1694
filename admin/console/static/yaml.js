// JSON data → YAML text for the editor and the views. Strings that could read as anything
// but a string (numbers, booleans, null, YAML 1.1's yes/no/on/off, ':' or '#') are quoted
// JSON-style, which YAML reads back as the same string.

const PLAIN = /^[A-Za-z_][A-Za-z0-9_.\/-]*$/;
const RESERVED = /^(true|false|yes|no|on|off|y|n|null|~)$/i;

function scalar(v) {
  if (v === null) return 'null';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  const s = String(v);
  return PLAIN.test(s) && !RESERVED.test(s) ? s : JSON.stringify(s);
}

const key = (k) => (PLAIN.test(k) && !RESERVED.test(k) ? k : JSON.stringify(k));
const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const empty = (v) => (Array.isArray(v) ? '[]' : '{}');

function lines(v, indent) {
  const pad = ' '.repeat(indent);
  const out = [];
  if (Array.isArray(v)) {
    for (const item of v) {
      if ((isObj(item) || Array.isArray(item)) && Object.keys(item).length) {
        const sub = lines(item, indent + 2);
        out.push(`${pad}- ${sub[0].trimStart()}`, ...sub.slice(1));
      } else {
        out.push(`${pad}- ${isObj(item) || Array.isArray(item) ? empty(item) : scalar(item)}`);
      }
    }
  } else {
    for (const [k, item] of Object.entries(v)) {
      if ((isObj(item) || Array.isArray(item)) && Object.keys(item).length) {
        out.push(`${pad}${key(k)}:`, ...lines(item, indent + 2));
      } else {
        out.push(`${pad}${key(k)}: ${isObj(item) || Array.isArray(item) ? empty(item) : scalar(item)}`);
      }
    }
  }
  return out;
}

export function dump(data) {
  if (!isObj(data) && !Array.isArray(data)) return `${scalar(data)}\n`;
  return `${lines(data, 0).join('\n')}\n`;
}
