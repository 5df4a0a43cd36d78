// The bus panel: the most recent events on the fanout exchanges (50 kept), newest first.
import { $, el, replace } from './dom.js';
import { clock, ms, short } from './format.js';

let busEvents = [];

/** The events a new event stream starts with (its history). */
export function setBusEvents(events) {
  busEvents = events;
  renderBus();
}

export function addBusEvent(event) {
  busEvents.push(event);
  if (busEvents.length > 50) busEvents.shift();
  renderBus();
}

function renderBus() {
  replace(
    $('bus-events'),
    busEvents
      .slice()
      .reverse()
      .map((e) =>
        el(
          'tr',
          { 'data-type': e.type },
          el('td', { cls: 'mono' }, clock(e.at)),
          el('td', null, e.exchange),
          el('td', { cls: 'ev-' + e.type }, e.type),
          el('td', { cls: 'num' }, e.version === null ? '-' : e.version),
          el('td', null, short(e.summary, 90)),
          el('td', { cls: 'mono muted' }, short(e.origin || '-', 28)),
          el('td', { cls: 'num' }, ms(e.transit_ms)),
        ),
      ),
  );
  $('bus-count').textContent = busEvents.length ? busEvents.length + ' most recent' : 'none yet: act below';
}
