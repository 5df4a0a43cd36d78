// The match panel: a task on character.match through Celery, its result from Redis.
import { busy, failure, post } from './api.js';
import { $, el, replace } from './dom.js';
import { ms } from './format.js';

function matchResult(r) {
  const c = r.body.result;
  return el(
    'div',
    { 'data-testid': 'match-result', 'data-status': r.body.status },
    el(
      'div',
      null,
      el('span', { cls: r.body.status === 'SUCCESS' ? 'ok' : 'bad' }, r.body.status),
      ' in ',
      el('span', { cls: 'big' }, ms(r.body.total_ms)),
      ' (published ' + ms(r.body.published_ms) + ')',
      r.body.worker ? ' by ' + r.body.worker : '',
    ),
    c && typeof c === 'object'
      ? el(
          'div',
          null,
          el('b', null, c.name),
          ' ',
          el('span', { cls: 'mono' }, c.code),
          el('div', { cls: 'muted' }, c.dialog || ''),
        )
      : el('div', { cls: 'muted' }, 'result: ' + JSON.stringify(c)),
    el('div', { cls: 'token mono' }, 'task ' + r.body.task_id),
  );
}

export function wireMatch() {
  const button = $('match');
  button.addEventListener('click', () => {
    const body = {
      major_category: $('major').value,
      middle_category: $('label').value,
      user_id: $('m-user').value,
    };
    busy(button, () => post('/api/match', body)).then((r) => {
      replace($('match-result'), r.ok ? matchResult(r) : failure(r));
    });
  });
}
