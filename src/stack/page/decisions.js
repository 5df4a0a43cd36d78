// The ext-authz decisions panel: the latest 30 the instances report, newest first.
import { $, el, replace } from './dom.js';
import { clock, short } from './format.js';

export function renderDecisions(state) {
  const list = (state && state.decisions) || [];
  replace(
    $('decisions'),
    list
      .slice(0, 30)
      .map((d) =>
        el(
          'tr',
          { 'data-instance': d.instance, 'data-allow': d.allow ? 'true' : 'false' },
          el('td', { cls: 'mono' }, clock(d.at)),
          el('td', null, d.instance),
          el('td', { cls: d.allow ? 'ok' : 'bad' }, d.allow ? 'allow' : 'deny'),
          el('td', null, d.reason),
          el('td', null, d.sub || ''),
          el('td', { cls: 'mono muted' }, short(d.jti || '', 14)),
        ),
      ),
  );
  const known = state && state.processes.some((p) => p.service === 'ext-authz' && p.decisions);
  $('decisions-hint').textContent = known
    ? 'newest first, both instances'
    : 'the ext-authz instances report none yet';
}
