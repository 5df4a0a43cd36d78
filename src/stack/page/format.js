// How times, durations and long strings are shown.

function pad(n, w) {
  n = String(n);
  while (n.length < w) n = '0' + n;
  return n;
}

/** The local time of day, to the millisecond: 14:03:07.042. */
export function clock(at) {
  if (at === null || at === undefined) return '-';
  const d = new Date(typeof at === 'string' ? Date.parse(at) : at);
  return (
    pad(d.getHours(), 2) +
    ':' +
    pad(d.getMinutes(), 2) +
    ':' +
    pad(d.getSeconds(), 2) +
    '.' +
    pad(d.getMilliseconds(), 3)
  );
}

/** How long ago: just now, 12 s ago, 3 min ago, 2 h ago. */
export function ago(at) {
  if (!at) return '-';
  const s = (Date.now() - (typeof at === 'string' ? Date.parse(at) : at)) / 1000;
  if (s < 1) return 'just now';
  if (s < 60) return Math.floor(s) + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  return Math.floor(s / 3600) + ' h ago';
}

/** Milliseconds, with fewer decimals the larger they are. */
export function ms(v) {
  if (v === null || v === undefined) return '-';
  return (v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v)) + ' ms';
}

/** At most n characters, an ellipsis marking a cut. */
export function short(s, n) {
  s = String(s || '');
  return s.length > n ? s.slice(0, n) + '\u2026' : s;
}

/** Whole seconds from now until at (a timestamp), never negative. */
export function secondsUntil(at) {
  return Math.max(0, Math.ceil((at - Date.now()) / 1000));
}
