// A line diff (longest common subsequence) laid out side by side.

export function sideBySide(a, b) {
  const x = a.split('\n');
  const y = b.split('\n');
  const n = x.length;
  const m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const rows = [];
  let i = 0;
  let j = 0;
  let dels = [];
  let adds = [];
  const flush = () => {
    for (let k = 0; k < Math.max(dels.length, adds.length); k++) {
      const l = dels[k];
      const r = adds[k];
      rows.push({
        kind: l && r ? 'changed' : l ? 'removed' : 'added',
        left: l ? l.text : null, ln: l ? l.no : null,
        right: r ? r.text : null, rn: r ? r.no : null,
      });
    }
    dels = [];
    adds = [];
  };
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) {
      flush();
      rows.push({ kind: 'same', left: x[i], ln: i + 1, right: y[j], rn: j + 1 });
      i++; j++;
    } else if (j < m && (i >= n || lcs[i][j + 1] >= lcs[i + 1][j])) {
      adds.push({ text: y[j], no: j + 1 }); j++;
    } else {
      dels.push({ text: x[i], no: i + 1 }); i++;
    }
  }
  flush();
  return rows;
}

// Unchanged runs longer than 2*context lines fold into one 'skip' row.
export function fold(rows, context = 3) {
  const out = [];
  let run = [];
  const close = (last) => {
    if (run.length > 2 * context + 1) {
      const head = out.length ? run.slice(0, context) : [];
      const tail = last ? [] : run.slice(-context);
      out.push(...head, { kind: 'skip', count: run.length - head.length - tail.length }, ...tail);
    } else out.push(...run);
    run = [];
  };
  for (const r of rows) {
    if (r.kind === 'same') run.push(r);
    else { close(false); out.push(r); }
  }
  close(true);
  return out;
}
