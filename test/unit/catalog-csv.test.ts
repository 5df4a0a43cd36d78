import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { CsvIssue, CsvResult } from '../../src/catalog/csv.ts';
import { MAX_CSV_ERRORS, formatCsvIssues, moreCsvErrors, parseCatalogCsv } from '../../src/catalog/csv.ts';
import type { CharacterInput } from '../../src/catalog/character-input.ts';
import { bigCatalogCsv } from '../support/big-csv.ts';

const HEADER = 'code,name,match_label,type_label,dialog,is_default';
const csv = (...lines: string[]): Buffer => Buffer.from(lines.join('\n') + '\n', 'utf8');

function rowsOf(result: CsvResult): CharacterInput[] {
  assert.ok(result.ok, `expected success, got ${result.ok ? '' : formatCsvIssues(result.errors)}`);
  return result.rows;
}

function errorsOf(result: CsvResult): Array<[number, string]> {
  assert.ok(!result.ok, 'expected the file to be refused');
  return result.errors.map((e) => [e.line, e.code]);
}

function messagesOf(result: CsvResult): string[] {
  return result.ok ? [] : result.errors.map((e) => e.message);
}

describe('parseCatalogCsv: valid files', () => {
  it('parses the sample catalog: 13 characters, one per label, general the only default', () => {
    const rows = rowsOf(
      parseCatalogCsv(readFileSync(new URL('../../data/sample-catalog.csv', import.meta.url))),
    );
    assert.equal(rows.length, 13);
    assert.deepEqual(rows.map((r) => r.match_label).sort(), [
      'battery',
      'can',
      'clothing',
      'electronics',
      'food_waste',
      'general',
      'glass',
      'metal',
      'paper',
      'pet_bottle',
      'plastic',
      'styrofoam',
      'vinyl',
    ]);
    assert.deepEqual(
      rows.filter((r) => r.is_default).map((r) => r.match_label),
      ['general'],
    );
    assert.equal(new Set(rows.map((r) => r.code)).size, 13);
    for (const r of rows) {
      assert.ok(r.name && r.type_label && r.dialog, r.code);
    }
  });

  it('maps columns by name, whatever their order, trims fields and turns empty optionals into null', () => {
    const rows = rowsOf(
      parseCatalogCsv(
        csv(
          'is_default,dialog,match_label,code,type_label,name',
          'YES,  Hello!  ,plastic, pet ,,Petty',
          'no,,glass,g,x,G',
        ),
      ),
    );
    assert.deepEqual(rows, [
      {
        code: 'pet',
        name: 'Petty',
        match_label: 'plastic',
        type_label: null,
        dialog: 'Hello!',
        is_default: true,
      },
      { code: 'g', name: 'G', match_label: 'glass', type_label: 'x', dialog: null, is_default: false },
    ]);
  });

  it('treats a missing is_default column as false', () => {
    const rows = rowsOf(
      parseCatalogCsv(csv('code,name,match_label,type_label,dialog', 'a,A,paper,recyclable,hi')),
    );
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.is_default, false);
  });

  it('accepts every boolean spelling, case-insensitively, and empty as false', () => {
    const values = ['true', 'TRUE', '1', 'Yes', 'false', 'False', '0', 'no', 'NO', ''];
    const lines = values.map((v, i) => `c${i},N,label,,,${v}`);
    // Only one true allowed per file, so check each truthy spelling in its own file.
    const falsy = rowsOf(parseCatalogCsv(csv(HEADER, ...lines.slice(4))));
    assert.ok(falsy.every((r) => !r.is_default));
    for (const line of lines.slice(0, 4)) {
      assert.equal(rowsOf(parseCatalogCsv(csv(HEADER, line)))[0]!.is_default, true, line);
    }
  });

  it('strips a UTF-8 BOM and keeps non-ASCII text intact', () => {
    // A quoted first column: a BOM left in front of it would be a quote inside an unquoted field.
    const body = csv(`"code",${HEADER.slice(5)}`, 'k,플라스틱 친구,plastic,재활용,안녕 👋,');
    const rows = rowsOf(parseCatalogCsv(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), body])));
    assert.equal(rows[0]!.code, 'k');
    assert.equal(rows[0]!.name, '플라스틱 친구');
    assert.equal(rows[0]!.dialog, '안녕 👋');
  });

  it('handles quoted fields with commas, newlines, escaped quotes and spaces around them', () => {
    const rows = rowsOf(
      parseCatalogCsv(
        csv(
          HEADER,
          'a,"Name, with comma",plastic,"","He said ""hi""",false',
          'b,B,paper,x,"line one',
          'line two",0',
          'c, "C" ,glass, , "  padded  " ,',
        ),
      ),
    );
    assert.deepEqual(
      rows.map((r) => [r.code, r.name, r.type_label, r.dialog]),
      [
        ['a', 'Name, with comma', null, 'He said "hi"'],
        ['b', 'B', 'x', 'line one\nline two'],
        ['c', 'C', null, 'padded'],
      ],
    );
  });

  it('skips blank lines and accepts CRLF, lone CR and a missing final newline', () => {
    const text = `\r\n${HEADER}\r\n\r\n   \r\na,A,plastic,,,\r\n"b",B,"multi\r\nline",,,\rc,C,can,,,`;
    const rows = rowsOf(parseCatalogCsv(Buffer.from(text)));
    assert.deepEqual(
      rows.map((r) => [r.code, r.match_label]),
      [
        ['a', 'plastic'],
        ['b', 'multi\r\nline'],
        ['c', 'can'],
      ],
    );
  });

  it('accepts fields exactly at the length limits', () => {
    const rows = rowsOf(parseCatalogCsv(csv(HEADER, `${'c'.repeat(200)},${'n'.repeat(10_000)},l,,,`)));
    assert.equal(rows[0]!.code.length, 200);
  });

  it('parses a 100,000-row file and reports progress about every 1000 rows', () => {
    const input = bigCatalogCsv(100_000);
    const progress: Array<[number, number]> = [];
    const started = performance.now();
    const rows = rowsOf(parseCatalogCsv(input, { onProgress: (r, b) => progress.push([r, b]) }));
    const ms = performance.now() - started;
    assert.equal(rows.length, 100_000);
    assert.equal(new Set(rows.map((r) => r.code)).size, 100_000);
    assert.equal(rows.filter((r) => r.is_default).length, 1);
    assert.ok(progress.length >= 100 && progress.length <= 101, `${progress.length} progress calls`);
    const [firstRows, firstBytes] = progress[0] ?? [0, 0];
    assert.equal(firstRows, 1000);
    assert.ok(firstBytes > 0 && firstBytes < input.length / 50, `${firstBytes} bytes after 1000 rows`);
    assert.deepEqual(progress.at(-1), [100_000, input.length]);
    for (let i = 1; i < progress.length; i++) {
      assert.ok(progress[i]![0] >= progress[i - 1]![0] && progress[i]![1] >= progress[i - 1]![1]);
    }
    console.log(`parsed 100,000 rows (${(input.length / 1e6).toFixed(1)} MB) in ${ms.toFixed(0)} ms`);
  });

  it('builds the same big file every time', () => {
    assert.ok(bigCatalogCsv(50).equals(bigCatalogCsv(50)));
  });
});

describe('parseCatalogCsv: refused files', () => {
  it('refuses an empty file and a header without rows', () => {
    assert.deepEqual(errorsOf(parseCatalogCsv(Buffer.alloc(0))), [[1, 'CSV_EMPTY']]);
    assert.deepEqual(errorsOf(parseCatalogCsv(Buffer.from('\n  \n'))), [[1, 'CSV_EMPTY']]);
    assert.deepEqual(errorsOf(parseCatalogCsv(csv(HEADER, '', ''))), [[1, 'CSV_EMPTY']]);
  });

  it('refuses a bad header on line 1, naming what is missing, unknown or duplicated', () => {
    const missing = parseCatalogCsv(csv('code,name,type_label', 'a,A,x'));
    assert.deepEqual(errorsOf(missing), [[1, 'CSV_BAD_HEADER']]);
    assert.match(messagesOf(missing)[0]!, /missing column\(s\) match_label, dialog/);

    const unknown = parseCatalogCsv(csv(`${HEADER},colour`, 'a,A,l,,,,red'));
    assert.deepEqual(errorsOf(unknown), [[1, 'CSV_BAD_HEADER']]);
    assert.match(messagesOf(unknown)[0]!, /unknown column\(s\) "colour"/);

    const duplicate = parseCatalogCsv(csv(`${HEADER},name`, 'a,A,l,,,,B'));
    assert.deepEqual(errorsOf(duplicate), [[1, 'CSV_BAD_HEADER']]);
    assert.match(messagesOf(duplicate)[0]!, /duplicate column\(s\) name/);

    // A data row where the header should be: both problems, one issue each.
    const noHeader = parseCatalogCsv(csv('a,A,plastic,recyclable,hi,Code'));
    assert.deepEqual(errorsOf(noHeader), [
      [1, 'CSV_BAD_HEADER'],
      [1, 'CSV_BAD_HEADER'],
    ]);
  });

  it('lists every row error in the file with its line number', () => {
    const result = parseCatalogCsv(
      csv(
        HEADER, // 1
        'pet,Pet,plastic,,,true', // 2
        'ok,Ok,paper,,,', // 3
        ',NoCode,glass,,,', // 4
        'pet,Again,can,,,', // 5: duplicate of line 2
        'b,B,,,,maybe', // 6: empty match_label and bad boolean
        '', // 7: blank, skipped
        'short,Short,vinyl', // 8: too few fields
        'long,Long,metal,,,,extra', // 9: too many fields
        `${'x'.repeat(201)},X,metal,,,`, // 10: code too long
        `d,D,metal,,${'y'.repeat(10_001)},`, // 11: dialog too long
        'second,Second,general,,,yes', // 12: second default
        '  ,  ,  ,,,', // 13: empty after trimming
        'q,"Multi', // 14: starts here...
        'line",can,,,', // 15
        'pet,Third,can,,,', // 16: duplicate of line 2 again
      ),
    );
    assert.deepEqual(errorsOf(result), [
      [4, 'CSV_EMPTY_FIELD'],
      [5, 'CSV_DUPLICATE_CODE'],
      [6, 'CSV_EMPTY_FIELD'],
      [6, 'CSV_BAD_BOOLEAN'],
      [8, 'CSV_MISSING_FIELD'],
      [9, 'CSV_EXTRA_FIELD'],
      [10, 'CSV_TOO_LONG'],
      [11, 'CSV_TOO_LONG'],
      [12, 'CSV_TOO_MANY_DEFAULTS'],
      [13, 'CSV_EMPTY_FIELD'],
      [13, 'CSV_EMPTY_FIELD'],
      [13, 'CSV_EMPTY_FIELD'],
      [16, 'CSV_DUPLICATE_CODE'],
    ]);
    const messages = messagesOf(result);
    assert.match(messages[0]!, /^code is empty$/);
    assert.match(messages[1]!, /^code "pet" already on line 2$/);
    assert.match(messages[2]!, /match_label is empty/);
    assert.match(messages[3]!, /"maybe"/);
    assert.match(messages[4]!, /expected 6 fields .*found 3/);
    assert.match(messages[6]!, /code is 201 characters, the limit is 200/);
    assert.match(messages[7]!, /dialog is 10001 characters, the limit is 10000/);
    assert.match(messages[8]!, /already true on line 2/);
    assert.match(messages[12]!, /already on line 2/);
  });

  it('keeps the first 1000 errors of a file wrong on every line and counts the rest, in little memory', () => {
    // 4 MB of `x\n`: once 2,000,000 error objects (+494 MiB) and 8.6 s of a blocked event loop.
    const input = Buffer.from(`${HEADER}\n${'x\n'.repeat(2_000_000)}`);
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    gc();
    const before = process.memoryUsage().heapUsed;
    const result = parseCatalogCsv(input);
    gc();
    const retained = process.memoryUsage().heapUsed - before;
    assert.ok(!result.ok);
    assert.equal(MAX_CSV_ERRORS, 1000);
    assert.equal(result.errors.length, 1000);
    assert.equal(result.errorCount, 2_000_000);
    assert.deepEqual(result.errors[0], {
      line: 2,
      code: 'CSV_MISSING_FIELD',
      message: 'expected 6 fields (code,name,match_label,type_label,dialog,is_default), found 1',
    });
    assert.equal(result.errors.at(-1)!.line, 1001, 'the first ones, in file order');
    assert.equal(moreCsvErrors(result), '... and 1999000 more errors');
    assert.ok(retained < 64 * 1024 * 1024, `the result holds ${retained} bytes`);
  });

  it('lists as many errors as asked, and says nothing more when all are listed', () => {
    const input = csv(HEADER, 'a', 'b', 'c');
    const two = parseCatalogCsv(input, { maxErrors: 2 });
    assert.deepEqual(errorsOf(two), [
      [2, 'CSV_MISSING_FIELD'],
      [3, 'CSV_MISSING_FIELD'],
    ]);
    assert.ok(!two.ok);
    assert.equal(two.errorCount, 3);
    assert.equal(moreCsvErrors(two), '... and 1 more error');
    const all = parseCatalogCsv(input);
    assert.ok(!all.ok);
    assert.equal(all.errorCount, 3);
    assert.equal(moreCsvErrors(all), '');
    assert.throws(() => parseCatalogCsv(input, { maxErrors: 0 }), RangeError);
  });

  it('reports the line where the record starts when an earlier record spans lines', () => {
    const result = parseCatalogCsv(
      Buffer.from(
        `${HEADER}\r\na,A,l,,"one\r\ntwo\r\nthree",\r\na,B,l,,,\r\nb,"x\ry\nz",l,,,\r\nb,C,l,,,\r\n`,
      ),
    );
    // Lines: 1 header, 2-4 a, 5 a again, 6-8 b (lone CR and LF inside quotes), 9 b again.
    assert.deepEqual(errorsOf(result), [
      [5, 'CSV_DUPLICATE_CODE'],
      [9, 'CSV_DUPLICATE_CODE'],
    ]);
    assert.match(messagesOf(result)[0]!, /already on line 2/);
    assert.match(messagesOf(result)[1]!, /already on line 6/);
  });

  it('refuses broken quoting with the line of the broken record, and stops there', () => {
    const unclosed = parseCatalogCsv(csv(HEADER, 'a,A,l,,,', 'b,B,l,,,', ',,,,,', 'c,"C,l,,,', 'd,D,l,,,'));
    // Line 4's empty fields are listed; nothing after the syntax error is.
    assert.deepEqual(errorsOf(unclosed), [
      [4, 'CSV_EMPTY_FIELD'],
      [4, 'CSV_EMPTY_FIELD'],
      [4, 'CSV_EMPTY_FIELD'],
      [5, 'CSV_BAD_QUOTING'],
    ]);
    assert.match(messagesOf(unclosed)[3]!, /never closed/);

    const afterClosing = parseCatalogCsv(csv(HEADER, 'a,A,l,,,', 'b,"B"x,l,,,', 'b,B,l,,,'));
    assert.deepEqual(errorsOf(afterClosing), [[3, 'CSV_BAD_QUOTING']]);
    assert.match(messagesOf(afterClosing)[0]!, /after a closing quote/);

    const stray = parseCatalogCsv(csv(HEADER, 'a,A,l,,,', 'b,5" screen,l,,,'));
    assert.deepEqual(errorsOf(stray), [[3, 'CSV_BAD_QUOTING']]);
    assert.match(messagesOf(stray)[0]!, /quote inside an unquoted field/);

    const inMultiline = parseCatalogCsv(csv(HEADER, 'a,"A', 'more",l,,"x"y,'));
    assert.deepEqual(errorsOf(inMultiline), [[2, 'CSV_BAD_QUOTING']]);
    assert.match(messagesOf(inMultiline)[0]!, /on line 3/);
  });

  it('reports invalid UTF-8 on the line of the first bad byte, even after a BOM', () => {
    const bad = Buffer.concat([
      Buffer.from(`${HEADER}\na,Ä,l,,,\nb,`),
      Buffer.from([0xc3, 0x28]), // a lead byte without its continuation
      Buffer.from(',l,,,\nc,\xff,l,,,\n', 'latin1'),
    ]);
    const result = parseCatalogCsv(bad);
    assert.deepEqual(errorsOf(result), [[3, 'CSV_BAD_ENCODING']]);
    assert.match(messagesOf(result)[0]!, /0xc3/);

    const withBom = Buffer.concat([
      Buffer.from([0xef, 0xbb, 0xbf]),
      Buffer.from(`${HEADER}\n`),
      Buffer.from([0xff]),
    ]);
    assert.deepEqual(errorsOf(parseCatalogCsv(withBom)), [[2, 'CSV_BAD_ENCODING']]);

    // Overlong encodings and surrogates are not UTF-8 either.
    for (const bytes of [
      [0xc0, 0xaf],
      [0xed, 0xa0, 0x80],
      [0xf4, 0x90, 0x80, 0x80],
    ]) {
      const input = Buffer.concat([Buffer.from(`${HEADER}\nx,`), Buffer.from(bytes), Buffer.from(',l,,,\n')]);
      assert.deepEqual(errorsOf(parseCatalogCsv(input)), [[2, 'CSV_BAD_ENCODING']], bytes.join(' '));
    }
  });
});

describe('formatCsvIssues', () => {
  it('prints one file:line: CODE: message line per issue', () => {
    const issues: CsvIssue[] = [
      { line: 1, code: 'CSV_BAD_HEADER', message: 'missing column(s) dialog' },
      { line: 12, code: 'CSV_DUPLICATE_CODE', message: 'code "pet" already on line 4' },
    ];
    assert.equal(
      formatCsvIssues(issues),
      'catalog.csv:1: CSV_BAD_HEADER: missing column(s) dialog\n' +
        'catalog.csv:12: CSV_DUPLICATE_CODE: code "pet" already on line 4',
    );
    assert.equal(
      formatCsvIssues(issues.slice(1), 'data/chars.csv'),
      'data/chars.csv:12: CSV_DUPLICATE_CODE: code "pet" already on line 4',
    );
    assert.equal(formatCsvIssues([]), '');
  });

  it('formats what the parser returns', () => {
    const result = parseCatalogCsv(csv(HEADER, 'pet,P,plastic,,,', 'x,X,can,,,', 'pet,Q,can,,,'));
    assert.ok(!result.ok);
    assert.equal(
      formatCsvIssues(result.errors, 'catalog.csv'),
      'catalog.csv:4: CSV_DUPLICATE_CODE: code "pet" already on line 2',
    );
  });
});
