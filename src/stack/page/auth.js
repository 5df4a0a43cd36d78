// The log in / log out panel: a token from auth, checked on every ext-authz
// instance; after log out, how long each took to refuse it.
import { busy, failure, post } from './api.js';
import { $, el, replace } from './dom.js';
import { ms, short } from './format.js';

/** The token the last log in minted, until log out. */
let token = null;

/** Per ext-authz instance: its answer (a check), or when it refused the token (propagation). */
function authzRows(rows, propagation) {
  return el(
    'table',
    { 'data-testid': propagation ? 'propagation' : 'checks' },
    el(
      'thead',
      null,
      el(
        'tr',
        null,
        el('th', null, 'ext-authz'),
        el('th', null, 'answer'),
        el('th', { cls: 'num' }, propagation ? 'refused after' : ''),
        propagation ? el('th', { cls: 'num' }, 'checks') : null,
      ),
    ),
    el(
      'tbody',
      null,
      rows.map((r) => {
        const c = propagation ? r.last : r;
        const refused = propagation ? r.refused_after_ms !== null : false;
        return el(
          'tr',
          {
            'data-instance': r.instance,
            'data-status': c.status === null ? 'down' : c.status,
            'data-error': c.error || '',
            'data-refused-ms': propagation && refused ? r.refused_after_ms : null,
          },
          el('td', null, r.instance),
          el('td', { cls: c.allow ? 'ok' : 'bad' }, answer(c)),
          el(
            'td',
            { cls: 'num big' },
            propagation ? (refused ? ms(r.refused_after_ms) : el('span', { cls: 'bad' }, 'not refused')) : '',
          ),
          propagation ? el('td', { cls: 'num' }, r.checks) : null,
        );
      }),
    ),
  );
}

function answer(c) {
  if (c.status === null) return 'no answer';
  return c.status + (c.allow ? ' allow' + (c.user_id ? ' (' + c.user_id + ')' : '') : ' ' + (c.error || ''));
}

/** The token held (or none), and whether check / log out can be used. */
export function showToken() {
  replace(
    $('token'),
    token
      ? [
          el(
            'div',
            null,
            'jti ',
            el('span', { cls: 'mono' }, token.jti || '?'),
            ' \u00b7 sub ',
            el('b', null, token.sub || '?'),
            ' \u00b7 expires in ' + token.expires_in + ' s',
          ),
          el('div', { cls: 'token mono' }, short(token.access_token, 120)),
        ]
      : el('span', { cls: 'muted' }, 'not logged in'),
  );
  $('logout').disabled = !token;
  $('check').disabled = !token;
}

function logIn() {
  busy($('login'), () => post('/api/login', { user_id: $('user').value })).then((r) => {
    if (!r.ok) {
      replace($('auth-result'), failure(r));
      return;
    }
    token = r.body;
    showToken();
    replace(
      $('auth-result'),
      el('div', null, 'login ' + ms(r.body.login_ms) + '; the token checked on every instance:'),
      authzRows(r.body.checks, false),
    );
  });
}

function check() {
  if (!token) return;
  busy($('check'), () => post('/api/check', { token: token.access_token })).then((r) => {
    replace($('auth-result'), r.ok ? authzRows(r.body.checks, false) : failure(r));
  });
}

function logOut() {
  if (!token) return;
  const t = token;
  busy($('logout'), () => post('/api/logout', { token: t.access_token })).then((r) => {
    if (!r.ok) {
      replace($('auth-result'), failure(r));
      return;
    }
    token = null;
    showToken();
    const all = r.body.instances.every((i) => i.refused_after_ms !== null);
    replace(
      $('auth-result'),
      el(
        'div',
        { 'data-testid': 'logout-result', 'data-all-refused': all ? 'true' : 'false' },
        el(
          'div',
          null,
          'logout answered ' +
            r.body.status +
            ' in ' +
            ms(r.body.logout_ms) +
            '; then the token was checked on each ext-authz every millisecond:',
        ),
        authzRows(r.body.instances, true),
      ),
    );
  });
}

export function wireAuth() {
  $('login').addEventListener('click', logIn);
  $('check').addEventListener('click', check);
  $('logout').addEventListener('click', logOut);
}
