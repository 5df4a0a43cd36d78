// The dashboard's script module: vanilla JS, no framework, nothing fetched from
// elsewhere. State arrives over server-sent events (/events); actions are JSON
// POSTs under /api. src/stack/page.ts inlines it into index.html when the stack starts.
var state = null;
var busEvents = [];
var activity = [];
var characters = [];

function $(id) { return document.getElementById(id); }
function el(tag, props) {
  var node = document.createElement(tag);
  if (props) {
    for (var k in props) {
      var v = props[k];
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') node.textContent = String(v);
      else if (k === 'cls') node.className = v;
      else if (k.slice(0, 2) === 'on') node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (var i = 2; i < arguments.length; i++) add(node, arguments[i]);
  return node;
}
function add(node, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) { child.forEach(function (c) { add(node, c); }); return; }
  node.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
}
function replace(node) { node.replaceChildren.apply(node, Array.prototype.slice.call(arguments, 1).flat().filter(Boolean)); }
function pad(n, w) { n = String(n); while (n.length < w) n = '0' + n; return n; }
function clock(at) {
  if (at === null || at === undefined) return '-';
  var d = new Date(typeof at === 'string' ? Date.parse(at) : at);
  return pad(d.getHours(), 2) + ':' + pad(d.getMinutes(), 2) + ':' + pad(d.getSeconds(), 2) + '.' + pad(d.getMilliseconds(), 3);
}
function ago(at) {
  if (!at) return '-';
  var s = (Date.now() - (typeof at === 'string' ? Date.parse(at) : at)) / 1000;
  if (s < 1) return 'just now';
  if (s < 60) return Math.floor(s) + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  return Math.floor(s / 3600) + ' h ago';
}
function ms(v) { return v === null || v === undefined ? '-' : (v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v)) + ' ms'; }
function short(s, n) { s = String(s || ''); return s.length > n ? s.slice(0, n) + '\u2026' : s; }

function post(path, body) {
  return fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body || {}) })
    .then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (json) { return { ok: res.ok, status: res.status, body: json }; });
    })
    .catch(function (err) { return { ok: false, status: 0, body: { error: 'network', message: String(err) } }; });
}
function failure(r) { return el('span', { cls: 'err' }, (r.body && (r.body.message || r.body.error)) || ('HTTP ' + r.status)); }
function busy(button, work) {
  button.disabled = true;
  return work().then(function (v) { button.disabled = false; return v; }, function (e) { button.disabled = false; throw e; });
}

// ------------------------------------------------------------------ processes
function renderProcesses() {
  if (!state) return;
  var ready = state.ready, total = state.total;
  var summary = $('summary');
  summary.textContent = state.stopping ? 'stopping' : ready + '/' + total + ' ready';
  summary.className = 'pill ' + (state.stopping ? 'b-stopped' : ready === total ? 'b-ready' : 'b-syncing');
  summary.setAttribute('data-ready', String(ready));
  summary.setAttribute('data-total', String(total));
  var bus = $('bus');
  bus.textContent = state.bus_connected ? 'bus: subscribed' : 'bus: connecting';
  bus.className = 'pill ' + (state.bus_connected ? 'b-ready' : 'b-degraded');
  replace($('processes'), state.processes.map(card));
}

function card(p) {
  var links = [];
  if (p.urls.http) links.push(el('a', { href: p.urls.http, target: '_blank' }, 'http :' + p.urls.http.split(':').pop()));
  links.push(el('a', { href: p.urls.admin + '/replicas', target: '_blank' }, 'admin :' + p.urls.admin.split(':').pop()));
  if (p.urls.grpc) links.push(el('span', null, 'grpc :' + p.urls.grpc.split(':').pop()));
  var broker = null;
  if (p.broker) {
    broker = p.broker.state === 'cut'
      ? el('span', { cls: 'cut' }, 'broker cut' + (p.broker.restore_at ? ', back in ' + Math.max(0, Math.ceil((p.broker.restore_at - Date.now()) / 1000)) + ' s' : ''))
      : el('span', null, 'broker ' + p.broker.connections + ' conn via :' + p.broker.port);
  }
  var replicas = p.replicas.length
    ? el('table', null,
        el('thead', null, el('tr', null, el('th', null, 'dataset'), el('th', null, 'state'), el('th', { cls: 'num' }, 'version'),
          el('th', { cls: 'num' }, 'size'), el('th', { cls: 'num' }, 'lag'), el('th', null, 'last event'))),
        el('tbody', null, p.replicas.map(function (r) {
          return el('tr', { 'data-dataset': r.dataset, 'data-state': r.state, 'data-version': r.version },
            el('td', null, r.dataset), el('td', { cls: 's-' + r.state }, r.state), el('td', { cls: 'num' }, r.version),
            el('td', { cls: 'num' }, r.size), el('td', { cls: 'num' }, ms(r.lag_ms)),
            el('td', { title: r.last_event_at || '' }, r.last_event_at ? clock(r.last_event_at) + ' (' + ago(r.last_event_at) + ')' : '-'));
        })))
    : el('div', { cls: 'muted' }, p.admin_reachable ? 'holds no replica' : p.status === 'starting' ? 'waiting for the admin port\u2026' : 'not running');
  var counts = null;
  if (p.service === 'ext-authz') {
    counts = p.decisions
      ? el('div', { cls: 'counts' }, Object.keys(p.decisions).map(function (k) { return el('span', null, k + ' ', el('b', null, p.decisions[k])); }))
      : el('div', { cls: 'counts muted' }, 'decisions: not reported by this build');
  } else if (p.service === 'match-worker' && p.worker) {
    counts = el('div', { cls: 'counts' }, ['success', 'no_match', 'expired', 'dead_lettered', 'failed', 'in_flight'].map(function (k) {
      return el('span', null, k + ' ', el('b', null, p.worker[k] === undefined ? '-' : p.worker[k]));
    }));
  }
  var running = p.status !== 'crashed' && p.status !== 'unavailable' && p.status !== 'stopped' && p.status !== 'stopping';
  return el('div', { cls: 'card st-' + p.status, 'data-testid': 'process', 'data-id': p.id, 'data-status': p.status, 'data-pid': p.pid || '' },
    el('div', { cls: 'card-head' },
      el('span', { cls: 'name' }, p.id), el('span', { cls: 'tag' }, p.service), el('span', { cls: 'spacer' }),
      el('span', { cls: 'badge b-' + p.status, 'data-testid': 'status' }, p.status)),
    el('div', { cls: 'meta' },
      el('span', null, 'pid ' + (p.pid || '-')),
      p.restarts ? el('span', { cls: 'warn' }, p.restarts + ' restart' + (p.restarts > 1 ? 's' : '')) : null,
      p.status === 'crashed' && p.last_exit ? el('span', { cls: 'bad' }, p.last_exit.description + (p.restart_at ? ', restart in ' + Math.max(0, Math.ceil((p.restart_at - Date.now()) / 1000)) + ' s' : '')) : null,
      links, broker),
    replicas, counts,
    p.problem ? el('pre', { cls: 'problem' }, p.problem) : null,
    el('div', { cls: 'actions-row' },
      p.broker ? el('button', { cls: 'small', 'data-action': 'disconnect', 'data-id': p.id, disabled: !running || p.broker.state === 'cut',
        title: 'cut its broker connections and refuse new ones for a few seconds' }, 'Disconnect from broker') : null,
      el('button', { cls: 'small danger', 'data-action': 'kill', 'data-id': p.id, disabled: !running, title: 'SIGKILL: the supervisor reports and restarts it' }, 'Kill')));
}

$('processes').addEventListener('click', function (e) {
  var b = e.target.closest('button[data-action]');
  if (!b || b.disabled) return;
  var id = b.getAttribute('data-id');
  var action = b.getAttribute('data-action');
  busy(b, function () { return post('/api/' + action, { process: id }); }).then(function (r) {
    if (!r.ok) addActivity({ at: Date.now(), level: 'error', message: id + ': ' + ((r.body && r.body.message) || r.status) });
  });
});

// ------------------------------------------------------------------ auth
var token = null;
function authzRows(rows, propagation) {
  return el('table', { 'data-testid': propagation ? 'propagation' : 'checks' },
    el('thead', null, el('tr', null, el('th', null, 'ext-authz'), el('th', null, 'answer'), el('th', { cls: 'num' }, propagation ? 'refused after' : ''), propagation ? el('th', { cls: 'num' }, 'checks') : null)),
    el('tbody', null, rows.map(function (r) {
      var c = propagation ? r.last : r;
      var refused = propagation ? r.refused_after_ms !== null : false;
      return el('tr', { 'data-instance': r.instance, 'data-status': c.status === null ? 'down' : c.status, 'data-error': c.error || '',
          'data-refused-ms': propagation && refused ? r.refused_after_ms : null },
        el('td', null, r.instance),
        el('td', { cls: c.allow ? 'ok' : 'bad' }, c.status === null ? 'no answer' : c.status + (c.allow ? ' allow' + (c.user_id ? ' (' + c.user_id + ')' : '') : ' ' + (c.error || ''))),
        el('td', { cls: 'num big' }, propagation ? (refused ? ms(r.refused_after_ms) : el('span', { cls: 'bad' }, 'not refused')) : ''),
        propagation ? el('td', { cls: 'num' }, r.checks) : null);
    })));
}
function showToken() {
  replace($('token'), token ? [el('div', null, 'jti ', el('span', { cls: 'mono' }, token.jti || '?'), ' \u00b7 sub ', el('b', null, token.sub || '?'), ' \u00b7 expires in ' + token.expires_in + ' s'),
    el('div', { cls: 'token mono' }, short(token.access_token, 120))] : el('span', { cls: 'muted' }, 'not logged in'));
  $('logout').disabled = !token;
  $('check').disabled = !token;
}
$('login').addEventListener('click', function () {
  var b = $('login');
  busy(b, function () { return post('/api/login', { user_id: $('user').value }); }).then(function (r) {
    if (!r.ok) { replace($('auth-result'), failure(r)); return; }
    token = r.body;
    showToken();
    replace($('auth-result'), el('div', null, 'login ' + ms(r.body.login_ms) + '; the token checked on every instance:'), authzRows(r.body.checks, false));
  });
});
$('check').addEventListener('click', function () {
  if (!token) return;
  busy(this, function () { return post('/api/check', { token: token.access_token }); }).then(function (r) {
    replace($('auth-result'), r.ok ? authzRows(r.body.checks, false) : failure(r));
  });
});
$('logout').addEventListener('click', function () {
  if (!token) return;
  var t = token;
  busy(this, function () { return post('/api/logout', { token: t.access_token }); }).then(function (r) {
    if (!r.ok) { replace($('auth-result'), failure(r)); return; }
    token = null;
    showToken();
    var all = r.body.instances.every(function (i) { return i.refused_after_ms !== null; });
    replace($('auth-result'),
      el('div', { 'data-testid': 'logout-result', 'data-all-refused': all ? 'true' : 'false' },
        el('div', null, 'logout answered ' + r.body.status + ' in ' + ms(r.body.logout_ms) + '; then the token was checked on each ext-authz every millisecond:'),
        authzRows(r.body.instances, true)));
  });
});

// ------------------------------------------------------------------ catalog
function loadCharacters() {
  return fetch('/api/characters').then(function (res) { return res.ok ? res.json() : null; }).then(function (list) {
    if (!Array.isArray(list)) return; // the catalog service is down: keep what was shown
    characters = list;
    characters.sort(function (a, b) { return a.code < b.code ? -1 : 1; });
    renderCharacters();
  }).catch(function () {});
}
function renderCharacters() {
  replace($('characters'), el('table', null,
    el('thead', null, el('tr', null, el('th', null, 'code'), el('th', null, 'name'), el('th', null, 'match_label'), el('th', null, 'type_label'), el('th', null, ''))),
    el('tbody', null, characters.map(function (c) {
      return el('tr', { 'data-code': c.code },
        el('td', { cls: 'mono' }, c.code), el('td', null, c.name), el('td', null, c.match_label), el('td', null, c.type_label || ''),
        el('td', null, c.is_default ? el('span', { cls: 'tag' }, 'default') : null));
    }))));
  var select = $('label');
  var current = select.value;
  var labels = [];
  characters.forEach(function (c) { if (labels.indexOf(c.match_label) < 0) labels.push(c.match_label); });
  labels.sort();
  replace(select, labels.map(function (l) { return el('option', { value: l }, l); }), el('option', { value: 'nothing-matches-this' }, '(no match)'));
  if (current) select.value = current;
  $('characters-count').textContent = characters.length + ' characters (from the catalog service\u2019s replica)';
}
$('characters').addEventListener('click', function (e) {
  var row = e.target.closest('tr[data-code]');
  if (!row) return;
  var c = characters.filter(function (x) { return x.code === row.getAttribute('data-code'); })[0];
  if (!c) return;
  $('c-code').value = c.code; $('c-name').value = c.name; $('c-label').value = c.match_label;
  $('c-type').value = c.type_label || ''; $('c-dialog').value = c.dialog || ''; $('c-default').checked = !!c.is_default;
});
function followRows(r) {
  return el('div', { 'data-testid': 'catalog-result' },
    el('div', null, 'written in ' + ms(r.write_ms) + ' (version ' + r.version + '); every replica of the catalog:'),
    el('table', null,
      el('thead', null, el('tr', null, el('th', null, 'process'), el('th', { cls: 'num' }, 'has it after'), el('th', { cls: 'num' }, 'version'), el('th', null, 'state'))),
      el('tbody', null, r.replicas.map(function (x) {
        return el('tr', { 'data-process': x.process, 'data-after-ms': x.after_ms === null ? null : x.after_ms },
          el('td', null, x.process), el('td', { cls: 'num big' }, x.after_ms === null ? el('span', { cls: 'bad' }, 'not yet') : ms(x.after_ms)),
          el('td', { cls: 'num' }, x.version === null ? '-' : x.version), el('td', { cls: 's-' + x.state }, x.state || 'down'));
      }))));
}
$('upsert').addEventListener('click', function () {
  var body = { code: $('c-code').value, name: $('c-name').value, match_label: $('c-label').value,
    type_label: $('c-type').value, dialog: $('c-dialog').value, is_default: $('c-default').checked };
  busy(this, function () { return post('/api/characters/upsert', body); }).then(function (r) {
    replace($('catalog-result'), r.ok ? followRows(r.body) : failure(r));
    loadCharacters();
  });
});
$('delete').addEventListener('click', function () {
  busy(this, function () { return post('/api/characters/delete', { code: $('c-code').value }); }).then(function (r) {
    replace($('catalog-result'), r.ok ? followRows(r.body) : failure(r));
    loadCharacters();
  });
});

// ------------------------------------------------------------------ match
$('match').addEventListener('click', function () {
  var body = { major_category: $('major').value, middle_category: $('label').value, user_id: $('m-user').value };
  busy(this, function () { return post('/api/match', body); }).then(function (r) {
    if (!r.ok) { replace($('match-result'), failure(r)); return; }
    var c = r.body.result;
    replace($('match-result'), el('div', { 'data-testid': 'match-result', 'data-status': r.body.status },
      el('div', null, el('span', { cls: r.body.status === 'SUCCESS' ? 'ok' : 'bad' }, r.body.status), ' in ', el('span', { cls: 'big' }, ms(r.body.total_ms)),
        ' (published ' + ms(r.body.published_ms) + ')', r.body.worker ? ' by ' + r.body.worker : ''),
      c && typeof c === 'object'
        ? el('div', null, el('b', null, c.name), ' ', el('span', { cls: 'mono' }, c.code), el('div', { cls: 'muted' }, c.dialog || ''))
        : el('div', { cls: 'muted' }, 'result: ' + JSON.stringify(c)),
      el('div', { cls: 'token mono' }, 'task ' + r.body.task_id)));
  });
});

// ------------------------------------------------------------------ bus, decisions, activity
function renderBus() {
  replace($('bus-events'), busEvents.slice().reverse().map(function (e) {
    return el('tr', { 'data-type': e.type },
      el('td', { cls: 'mono' }, clock(e.at)), el('td', null, e.exchange), el('td', { cls: 'ev-' + e.type }, e.type),
      el('td', { cls: 'num' }, e.version === null ? '-' : e.version), el('td', null, short(e.summary, 90)),
      el('td', { cls: 'mono muted' }, short(e.origin || '-', 28)), el('td', { cls: 'num' }, ms(e.transit_ms)));
  }));
  $('bus-count').textContent = busEvents.length ? busEvents.length + ' most recent' : 'none yet: act below';
}
function renderDecisions() {
  var list = (state && state.decisions) || [];
  replace($('decisions'), list.slice(0, 30).map(function (d) {
    return el('tr', { 'data-instance': d.instance, 'data-allow': d.allow ? 'true' : 'false' },
      el('td', { cls: 'mono' }, clock(d.at)), el('td', null, d.instance), el('td', { cls: d.allow ? 'ok' : 'bad' }, d.allow ? 'allow' : 'deny'),
      el('td', null, d.reason), el('td', null, d.sub || ''), el('td', { cls: 'mono muted' }, short(d.jti || '', 14)));
  }));
  var known = state && state.processes.some(function (p) { return p.service === 'ext-authz' && p.decisions; });
  $('decisions-hint').textContent = known ? 'newest first, both instances' : 'the ext-authz instances report none yet';
}
function addActivity(line) {
  activity.push(line);
  if (activity.length > 200) activity.shift();
  renderActivity();
}
function renderActivity() {
  replace($('activity'), activity.slice().reverse().slice(0, 100).map(function (l) {
    return el('div', { cls: 'log-' + l.level }, el('span', { cls: 'mono muted' }, clock(l.at) + ' '), l.message);
  }));
}

// ------------------------------------------------------------------ live updates
var lastCatalogVersion = null;
function connect() {
  var es = new EventSource('/events');
  var live = $('live');
  es.onopen = function () { live.textContent = 'live'; live.className = 'pill b-ready'; };
  es.onerror = function () { live.textContent = 'reconnecting'; live.className = 'pill b-crashed'; };
  es.addEventListener('history', function (e) {
    var h = JSON.parse(e.data);
    busEvents = h.bus; activity = h.activity; renderBus(); renderActivity();
  });
  es.addEventListener('state', function (e) {
    state = JSON.parse(e.data);
    renderProcesses(); renderDecisions();
    var cat = state.processes.filter(function (p) { return p.service === 'catalog'; })[0];
    var v = cat && cat.replicas[0] ? cat.replicas[0].version : null;
    if (v !== lastCatalogVersion) { lastCatalogVersion = v; loadCharacters(); }
  });
  es.addEventListener('bus', function (e) {
    busEvents.push(JSON.parse(e.data));
    if (busEvents.length > 50) busEvents.shift();
    renderBus();
  });
  es.addEventListener('activity', function (e) { addActivity(JSON.parse(e.data)); });
}
setInterval(function () { if (state) renderProcesses(); }, 1000);
showToken();
connect();
