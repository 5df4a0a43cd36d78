// The catalog panel: the characters (from the catalog service's replica), a
// form to upsert or delete one, and how long each replica took to have the write.
import { busy, failure, post } from './api.js';
import { $, el, replace } from './dom.js';
import { ms } from './format.js';

let characters = [];

export function loadCharacters() {
  return fetch('/api/characters')
    .then((res) => (res.ok ? res.json() : null))
    .then((list) => {
      if (!Array.isArray(list)) return; // the catalog service is down: keep what was shown
      characters = list;
      characters.sort((a, b) => (a.code < b.code ? -1 : 1));
      renderCharacters();
    })
    .catch(() => {});
}

function renderCharacters() {
  replace(
    $('characters'),
    el(
      'table',
      null,
      el(
        'thead',
        null,
        el(
          'tr',
          null,
          el('th', null, 'code'),
          el('th', null, 'name'),
          el('th', null, 'match_label'),
          el('th', null, 'type_label'),
          el('th', null, ''),
        ),
      ),
      el(
        'tbody',
        null,
        characters.map((c) =>
          el(
            'tr',
            { 'data-code': c.code },
            el('td', { cls: 'mono' }, c.code),
            el('td', null, c.name),
            el('td', null, c.match_label),
            el('td', null, c.type_label || ''),
            el('td', null, c.is_default ? el('span', { cls: 'tag' }, 'default') : null),
          ),
        ),
      ),
    ),
  );
  renderLabels();
  $('characters-count').textContent =
    characters.length + ' characters (from the catalog service\u2019s replica)';
}

/** The match panel's choice of middle_category: every match_label, and one that matches nothing. */
function renderLabels() {
  const select = $('label');
  const current = select.value;
  const labels = [];
  characters.forEach((c) => {
    if (labels.indexOf(c.match_label) < 0) labels.push(c.match_label);
  });
  labels.sort();
  replace(
    select,
    labels.map((l) => el('option', { value: l }, l)),
    el('option', { value: 'nothing-matches-this' }, '(no match)'),
  );
  if (current) select.value = current;
}

/** A clicked row fills the form. */
function edit(e) {
  const row = e.target.closest('tr[data-code]');
  if (!row) return;
  const c = characters.filter((x) => x.code === row.getAttribute('data-code'))[0];
  if (!c) return;
  $('c-code').value = c.code;
  $('c-name').value = c.name;
  $('c-label').value = c.match_label;
  $('c-type').value = c.type_label || '';
  $('c-dialog').value = c.dialog || '';
  $('c-default').checked = !!c.is_default;
}

/** A write's version, and per process when its replica of the catalog had it. */
function followRows(r) {
  return el(
    'div',
    { 'data-testid': 'catalog-result' },
    el(
      'div',
      null,
      'written in ' + ms(r.write_ms) + ' (version ' + r.version + '); every replica of the catalog:',
    ),
    el(
      'table',
      null,
      el(
        'thead',
        null,
        el(
          'tr',
          null,
          el('th', null, 'process'),
          el('th', { cls: 'num' }, 'has it after'),
          el('th', { cls: 'num' }, 'version'),
          el('th', null, 'state'),
        ),
      ),
      el(
        'tbody',
        null,
        r.replicas.map((x) =>
          el(
            'tr',
            { 'data-process': x.process, 'data-after-ms': x.after_ms === null ? null : x.after_ms },
            el('td', null, x.process),
            el(
              'td',
              { cls: 'num big' },
              x.after_ms === null ? el('span', { cls: 'bad' }, 'not yet') : ms(x.after_ms),
            ),
            el('td', { cls: 'num' }, x.version === null ? '-' : x.version),
            el('td', { cls: 's-' + x.state }, x.state || 'down'),
          ),
        ),
      ),
    ),
  );
}

function write(button, path, body) {
  busy(button, () => post(path, body)).then((r) => {
    replace($('catalog-result'), r.ok ? followRows(r.body) : failure(r));
    loadCharacters();
  });
}

export function wireCatalog() {
  $('characters').addEventListener('click', edit);
  $('upsert').addEventListener('click', () => {
    write($('upsert'), '/api/characters/upsert', {
      code: $('c-code').value,
      name: $('c-name').value,
      match_label: $('c-label').value,
      type_label: $('c-type').value,
      dialog: $('c-dialog').value,
      is_default: $('c-default').checked,
    });
  });
  $('delete').addEventListener('click', () => {
    write($('delete'), '/api/characters/delete', { code: $('c-code').value });
  });
}
