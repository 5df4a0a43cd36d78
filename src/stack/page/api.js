// The dashboard's actions: JSON POSTs under /api, answered as
// { ok, status, body } (a network failure too, as status 0), never a rejection.
import { el } from './dom.js';

export function post(path, body) {
  return fetch(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body || {}),
  })
    .then((res) =>
      res
        .json()
        .catch(() => ({}))
        .then((json) => ({ ok: res.ok, status: res.status, body: json })),
    )
    .catch((err) => ({ ok: false, status: 0, body: { error: 'network', message: String(err) } }));
}

/** What a failed action answered, shown as an error. */
export function failure(r) {
  return el('span', { cls: 'err' }, (r.body && (r.body.message || r.body.error)) || 'HTTP ' + r.status);
}

/** Disables button while work runs: one click, one action. */
export function busy(button, work) {
  button.disabled = true;
  return work().then(
    (v) => {
      button.disabled = false;
      return v;
    },
    (e) => {
      button.disabled = false;
      throw e;
    },
  );
}
