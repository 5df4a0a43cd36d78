// The dashboard's entry module: vanilla JS, no framework, nothing fetched from
// elsewhere. State arrives over server-sent events (feed.js); actions are JSON
// POSTs under /api (api.js); each panel renders in a module of its own.
import { wireAuth, showToken } from './auth.js';
import { wireCatalog } from './catalog.js';
import { connect, currentState } from './feed.js';
import { wireMatch } from './match.js';
import { renderProcesses, wireProcesses } from './processes.js';

wireProcesses();
wireAuth();
wireCatalog();
wireMatch();
// Ages and countdowns on the process cards move on between state changes.
setInterval(() => {
  const state = currentState();
  if (state) renderProcesses(state);
}, 1000);
showToken();
connect();
