// The live feed: server-sent events from /events. `history` (the recent bus
// events and activity) and `state` arrive first, then `state` whenever it
// changes, `bus` per event on the fanout exchanges and `activity` per log line.
import { addActivity, setActivity } from './activity.js';
import { addBusEvent, setBusEvents } from './bus.js';
import { loadCharacters } from './catalog.js';
import { renderDecisions } from './decisions.js';
import { $ } from './dom.js';
import { renderProcesses } from './processes.js';

/** The stack's state as last sent; null until the first. */
let state = null;
/** The catalog replica's version the characters were last loaded for. */
let lastCatalogVersion = null;

export function currentState() {
  return state;
}

export function connect() {
  const es = new EventSource('/events');
  const live = $('live');
  es.onopen = () => {
    live.textContent = 'live';
    live.className = 'pill b-ready';
  };
  es.onerror = () => {
    live.textContent = 'reconnecting';
    live.className = 'pill b-crashed';
  };
  es.addEventListener('history', (e) => {
    const h = JSON.parse(e.data);
    setBusEvents(h.bus);
    setActivity(h.activity);
  });
  es.addEventListener('state', (e) => {
    state = JSON.parse(e.data);
    renderProcesses(state);
    renderDecisions(state);
    const cat = state.processes.filter((p) => p.service === 'catalog')[0];
    const v = cat && cat.replicas[0] ? cat.replicas[0].version : null;
    if (v !== lastCatalogVersion) {
      lastCatalogVersion = v;
      loadCharacters();
    }
  });
  es.addEventListener('bus', (e) => addBusEvent(JSON.parse(e.data)));
  es.addEventListener('activity', (e) => addActivity(JSON.parse(e.data)));
}
