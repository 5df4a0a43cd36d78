import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { blacklistDataset, blacklistExpireAtMs, toBlacklistValue } from '../../src/datasets/blacklist.ts';
import { catalogDataset } from '../../src/datasets/catalog.ts';
import { isCachecastError } from '../../src/errors.ts';

const seedCharacter = {
  id: 'u1',
  code: 'pet',
  name: 'Pet',
  match_label: 'plastic',
  type_label: null,
  dialog: 'hi',
};

describe('catalog dataset', () => {
  it('maps the seed 000 events to changes, defaults is_default and drops unknown fields', () => {
    assert.deepEqual(catalogDataset.decode({ type: 'upsert', character: { ...seedCharacter, extra: 1 } }), {
      kind: 'set',
      key: 'u1',
      value: { ...seedCharacter, is_default: false },
    });
    assert.deepEqual(catalogDataset.decode({ type: 'delete', character_id: 'u1' }), {
      kind: 'delete',
      key: 'u1',
    });
    const refresh = catalogDataset.decode({
      type: 'full_refresh',
      characters: [seedCharacter, { ...seedCharacter, id: 'u2', is_default: true }],
    });
    assert.equal(refresh.kind, 'replace');
    assert.deepEqual(refresh.kind === 'replace' && refresh.entries.map(([k, v]) => [k, v.is_default]), [
      ['u1', false],
      ['u2', true],
    ]);
    // type_label and dialog may be missing entirely (seed: metadata.get(...)).
    const { type_label: _t, dialog: _d, ...bare } = seedCharacter;
    const bareChange = catalogDataset.decode({ type: 'upsert', character: bare });
    assert.equal(bareChange.kind === 'set' && bareChange.value.type_label, null);
  });

  it('rejects wrong shapes, naming the field', () => {
    const bad: Array<[Record<string, unknown>, string, RegExp]> = [
      [{ type: 'upsert' }, 'EVENT_BAD_SHAPE', /character/],
      [{ type: 'upsert', character: { ...seedCharacter, code: 5 } }, 'EVENT_BAD_SHAPE', /character\.code/],
      [
        { type: 'upsert', character: { ...seedCharacter, is_default: 'yes' } },
        'EVENT_BAD_SHAPE',
        /is_default/,
      ],
      [{ type: 'full_refresh', characters: 'all' }, 'EVENT_BAD_SHAPE', /characters/],
      [{ type: 'full_refresh', characters: [seedCharacter, {}] }, 'EVENT_BAD_SHAPE', /characters\[1\]/],
      [{ type: 'delete', character_id: '' }, 'EVENT_BAD_SHAPE', /character_id/],
      [{ type: 'rename' }, 'EVENT_UNKNOWN_TYPE', /rename/],
    ];
    for (const [event, code, message] of bad) {
      assert.throws(
        () => catalogDataset.decode(event),
        (err: unknown) => isCachecastError(err) && err.code === code && message.test(err.message),
        JSON.stringify(event),
      );
    }
  });
});

describe('blacklist dataset', () => {
  it('stores expire_at as a small integer and converts it back exactly', () => {
    const expireAt = 1_800_000_000;
    const change = blacklistDataset.decode({ type: 'blacklist_added', jti: 'j1', expire_at: expireAt });
    assert.equal(change.kind, 'set');
    const value = change.kind === 'set' ? change.value : -1;
    assert.ok(value < 2 ** 30, 'fits a V8 small integer');
    assert.equal(blacklistExpireAtMs(value), expireAt * 1000);
    assert.equal(
      blacklistExpireAtMs(toBlacklistValue(1_800_000_000.2)),
      1_800_000_001_000,
      'rounds up, never early',
    );
  });

  it('rejects anything but a well-formed blacklist_added', () => {
    for (const event of [
      { type: 'blacklist_removed', jti: 'j' },
      { type: 'blacklist_added', jti: '', expire_at: 1 },
      { type: 'blacklist_added', jti: 'x'.repeat(257), expire_at: 1 },
      { type: 'blacklist_added', jti: 'j', expire_at: 'tomorrow' },
      { type: 'blacklist_added', jti: 'j', expire_at: -5 },
      { type: 'blacklist_added', jti: 'j' },
    ]) {
      assert.throws(
        () => blacklistDataset.decode(event),
        (err: unknown) => isCachecastError(err),
        JSON.stringify(event),
      );
    }
  });
});
