// The activity panel: the stack's log (lifecycle, faults, action results),
// newest first; the last 200 lines kept, 100 shown.
import { $, el, replace } from './dom.js';
import { clock } from './format.js';

let activity = [];

/** The lines a new event stream starts with (its history). */
export function setActivity(lines) {
  activity = lines;
  renderActivity();
}

export function addActivity(line) {
  activity.push(line);
  if (activity.length > 200) activity.shift();
  renderActivity();
}

function renderActivity() {
  replace(
    $('activity'),
    activity
      .slice()
      .reverse()
      .slice(0, 100)
      .map((l) =>
        el('div', { cls: 'log-' + l.level }, el('span', { cls: 'mono muted' }, clock(l.at) + ' '), l.message),
      ),
  );
}
