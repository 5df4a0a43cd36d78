// The processes panel: the summary pills in the header, and one card per
// process with its replicas, its counters and its kill / disconnect buttons.
import { addActivity } from './activity.js';
import { busy, post } from './api.js';
import { $, el, replace } from './dom.js';
import { ago, clock, ms, secondsUntil } from './format.js';

const WORKER_COUNTS = ['success', 'no_match', 'expired', 'dead_lettered', 'failed', 'in_flight'];

export function renderProcesses(state) {
  if (!state) return;
  const ready = state.ready;
  const total = state.total;
  const summary = $('summary');
  summary.textContent = state.stopping ? 'stopping' : ready + '/' + total + ' ready';
  summary.className = 'pill ' + (state.stopping ? 'b-stopped' : ready === total ? 'b-ready' : 'b-syncing');
  summary.setAttribute('data-ready', String(ready));
  summary.setAttribute('data-total', String(total));
  const bus = $('bus');
  bus.textContent = state.bus_connected ? 'bus: subscribed' : 'bus: connecting';
  bus.className = 'pill ' + (state.bus_connected ? 'b-ready' : 'b-degraded');
  replace($('processes'), state.processes.map(card));
}

function port(url) {
  return url.split(':').pop();
}

function links(p) {
  const list = [];
  if (p.urls.http) list.push(el('a', { href: p.urls.http, target: '_blank' }, 'http :' + port(p.urls.http)));
  list.push(el('a', { href: p.urls.admin + '/replicas', target: '_blank' }, 'admin :' + port(p.urls.admin)));
  if (p.urls.grpc) list.push(el('span', null, 'grpc :' + port(p.urls.grpc)));
  return list;
}

function broker(p) {
  if (!p.broker) return null;
  if (p.broker.state === 'cut') {
    const back = p.broker.restore_at ? ', back in ' + secondsUntil(p.broker.restore_at) + ' s' : '';
    return el('span', { cls: 'cut' }, 'broker cut' + back);
  }
  return el('span', null, 'broker ' + p.broker.connections + ' conn via :' + p.broker.port);
}

function replicas(p) {
  if (!p.replicas.length) {
    return el(
      'div',
      { cls: 'muted' },
      p.admin_reachable
        ? 'holds no replica'
        : p.status === 'starting'
          ? 'waiting for the admin port\u2026'
          : 'not running',
    );
  }
  return el(
    'table',
    null,
    el(
      'thead',
      null,
      el(
        'tr',
        null,
        el('th', null, 'dataset'),
        el('th', null, 'state'),
        el('th', { cls: 'num' }, 'version'),
        el('th', { cls: 'num' }, 'size'),
        el('th', { cls: 'num' }, 'lag'),
        el('th', null, 'last event'),
      ),
    ),
    el(
      'tbody',
      null,
      p.replicas.map((r) =>
        el(
          'tr',
          { 'data-dataset': r.dataset, 'data-state': r.state, 'data-version': r.version },
          el('td', null, r.dataset),
          el('td', { cls: 's-' + r.state }, r.state),
          el('td', { cls: 'num' }, r.version),
          el('td', { cls: 'num' }, r.size),
          el('td', { cls: 'num' }, ms(r.lag_ms)),
          el(
            'td',
            { title: r.last_event_at || '' },
            r.last_event_at ? clock(r.last_event_at) + ' (' + ago(r.last_event_at) + ')' : '-',
          ),
        ),
      ),
    ),
  );
}

function counts(p) {
  if (p.service === 'ext-authz') {
    if (!p.decisions) return el('div', { cls: 'counts muted' }, 'decisions: not reported by this build');
    return el(
      'div',
      { cls: 'counts' },
      Object.keys(p.decisions).map((k) => el('span', null, k + ' ', el('b', null, p.decisions[k]))),
    );
  }
  if (p.service === 'match-worker' && p.worker) {
    return el(
      'div',
      { cls: 'counts' },
      WORKER_COUNTS.map((k) =>
        el('span', null, k + ' ', el('b', null, p.worker[k] === undefined ? '-' : p.worker[k])),
      ),
    );
  }
  return null;
}

function lastExit(p) {
  if (p.status !== 'crashed' || !p.last_exit) return null;
  const restart = p.restart_at ? ', restart in ' + secondsUntil(p.restart_at) + ' s' : '';
  return el('span', { cls: 'bad' }, p.last_exit.description + restart);
}

function buttons(p) {
  const running =
    p.status !== 'crashed' && p.status !== 'unavailable' && p.status !== 'stopped' && p.status !== 'stopping';
  return el(
    'div',
    { cls: 'actions-row' },
    p.broker
      ? el(
          'button',
          {
            cls: 'small',
            'data-action': 'disconnect',
            'data-id': p.id,
            disabled: !running || p.broker.state === 'cut',
            title: 'cut its broker connections and refuse new ones for a few seconds',
          },
          'Disconnect from broker',
        )
      : null,
    el(
      'button',
      {
        cls: 'small danger',
        'data-action': 'kill',
        'data-id': p.id,
        disabled: !running,
        title: 'SIGKILL: the supervisor reports and restarts it',
      },
      'Kill',
    ),
  );
}

function card(p) {
  return el(
    'div',
    {
      cls: 'card st-' + p.status,
      'data-testid': 'process',
      'data-id': p.id,
      'data-status': p.status,
      'data-pid': p.pid || '',
    },
    el(
      'div',
      { cls: 'card-head' },
      el('span', { cls: 'name' }, p.id),
      el('span', { cls: 'tag' }, p.service),
      el('span', { cls: 'spacer' }),
      el('span', { cls: 'badge b-' + p.status, 'data-testid': 'status' }, p.status),
    ),
    el(
      'div',
      { cls: 'meta' },
      el('span', null, 'pid ' + (p.pid || '-')),
      p.restarts ? el('span', { cls: 'warn' }, p.restarts + ' restart' + (p.restarts > 1 ? 's' : '')) : null,
      lastExit(p),
      links(p),
      broker(p),
    ),
    replicas(p),
    counts(p),
    p.problem ? el('pre', { cls: 'problem' }, p.problem) : null,
    buttons(p),
  );
}

/** A card's buttons: kill the process, or cut its broker connections for a while. */
export function wireProcesses() {
  $('processes').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-action]');
    if (!b || b.disabled) return;
    const id = b.getAttribute('data-id');
    const action = b.getAttribute('data-action');
    busy(b, () => post('/api/' + action, { process: id })).then((r) => {
      if (!r.ok) {
        addActivity({
          at: Date.now(),
          level: 'error',
          message: id + ': ' + ((r.body && r.body.message) || r.status),
        });
      }
    });
  });
}
