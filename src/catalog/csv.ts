import { integerRangeOption } from '../options.ts';
import type { CharacterInput } from './character-input.ts';
import { firstInvalidUtf8, lineOfByte, tokenize } from './csv-tokenizer.ts';

/**
 * Stable codes for catalog CSV problems; callers may `switch` on them.
 * Syntax-level codes (encoding, quoting) stop parsing; every other code is
 * collected so that one import lists the problems of the whole file (the
 * first MAX_CSV_ERRORS of them; the rest are counted).
 */
export type CsvIssueCode =
  /** The file is not valid UTF-8 (reported on the line of the first bad byte). */
  | 'CSV_BAD_ENCODING'
  /** Unclosed quote, text after a closing quote, or a quote inside an unquoted field. */
  | 'CSV_BAD_QUOTING'
  /** No header row, or a header and no data rows. */
  | 'CSV_EMPTY'
  /** A missing, unknown or duplicated column in the header. */
  | 'CSV_BAD_HEADER'
  /** A row with fewer fields than the header. */
  | 'CSV_MISSING_FIELD'
  /** A row with more fields than the header. */
  | 'CSV_EXTRA_FIELD'
  /** code, name or match_label empty after trimming. */
  | 'CSV_EMPTY_FIELD'
  /** A field over its length limit (code 200, others 10000 UTF-16 code units). */
  | 'CSV_TOO_LONG'
  /** is_default not one of true/false/1/0/yes/no/empty. */
  | 'CSV_BAD_BOOLEAN'
  /** A code already used on an earlier line. */
  | 'CSV_DUPLICATE_CODE'
  /** A second row with is_default true. */
  | 'CSV_TOO_MANY_DEFAULTS';

export interface CsvIssue {
  /** 1-based physical line of the file; for a record spanning lines, the line where it starts. */
  line: number;
  code: CsvIssueCode;
  message: string;
}

export type CsvResult =
  | { ok: true; rows: CharacterInput[] }
  | {
      ok: false;
      /** The first `maxErrors` problems, in file order. */
      errors: CsvIssue[];
      /** Every problem found, listed or not (`errorCount - errors.length` more than listed). */
      errorCount: number;
    };

/**
 * Problems kept by default: a file wrong on every line (4 MB of `x\n` is
 * 2,000,000 errors) would otherwise cost hundreds of MiB and seconds of a
 * blocked event loop to list, for an answer nobody reads past its start.
 */
export const MAX_CSV_ERRORS = 1000;

export interface ParseCatalogCsvOptions {
  /** Called every PROGRESS_EVERY data rows and once at the end; bytesDone counts bytes of `input`. */
  onProgress?: (rowsDone: number, bytesDone: number) => void;
  /** Problems listed; past it they are only counted. @default MAX_CSV_ERRORS (1000) */
  maxErrors?: number;
}

const REQUIRED_COLUMNS = ['code', 'name', 'match_label', 'type_label', 'dialog'] as const;
const OPTIONAL_COLUMNS = ['is_default'] as const;
type Column = (typeof REQUIRED_COLUMNS)[number] | (typeof OPTIONAL_COLUMNS)[number];
const KNOWN_COLUMNS: ReadonlySet<string> = new Set<string>([...REQUIRED_COLUMNS, ...OPTIONAL_COLUMNS]);

interface Header {
  columns: Column[];
  /** Field index of each column, -1 when absent (only is_default may be). */
  index: Record<Column, number>;
  line: number;
  /** The field-count message, built once: a file may have millions of rows with the wrong count. */
  fieldCountMessage: (found: number) => string;
}

/** Same limits as the wire schema (src/datasets/catalog.ts). */
export const CSV_CODE_MAX = 200;
export const CSV_TEXT_MAX = 10_000;
const PROGRESS_EVERY = 1000;

const TRUE_WORDS: ReadonlySet<string> = new Set(['true', '1', 'yes']);
const FALSE_WORDS: ReadonlySet<string> = new Set(['false', '0', 'no', '']);

const show = (value: string): string =>
  JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);

/**
 * Parses and validates a catalog CSV (CONTRACT.md, "Catalog CSV"). All-or-nothing:
 * either every row is valid and all rows are returned, or every problem found is
 * returned with its line number (parsing stops at the first encoding or quoting
 * error, since what follows it cannot be trusted).
 */
export function parseCatalogCsv(input: Buffer, options: ParseCatalogCsvOptions = {}): CsvResult {
  const { onProgress } = options;
  const maxErrors = integerRangeOption('maxErrors', options.maxErrors, MAX_CSV_ERRORS, 1);
  const bomLength = input[0] === 0xef && input[1] === 0xbb && input[2] === 0xbf ? 3 : 0;

  let text: string;
  try {
    // Strips one leading BOM (ignoreBOM: false).
    text = new TextDecoder('utf-8', { fatal: true }).decode(input);
  } catch {
    const body = input.subarray(bomLength);
    const at = firstInvalidUtf8(body);
    const offset = at < 0 ? body.length : at;
    const byte = at < 0 ? '' : ` (byte 0x${body[at]!.toString(16).padStart(2, '0')})`;
    return {
      ok: false,
      errors: [
        {
          line: lineOfByte(body, offset),
          code: 'CSV_BAD_ENCODING',
          message: `invalid UTF-8${byte}; save the file as UTF-8`,
        },
      ],
      errorCount: 1,
    };
  }

  const issues: CsvIssue[] = [];
  let issueCount = 0;
  const rows: CharacterInput[] = [];
  const issue = (line: number, code: CsvIssueCode, message: string): void => {
    issueCount++;
    if (issues.length < maxErrors) issues.push({ line, code, message });
  };

  // Assigned from the tokenizer callback, so kept in an object for control-flow analysis.
  const state: { header: Header | null; headerBad: boolean } = { header: null, headerBad: false };
  let dataRows = 0;
  let progressChars = 0;
  let progressBytes = bomLength;
  const codeLines = new Map<string, number>();
  let defaultLine = 0;

  const onRecord = (raw: string[], line: number, end: number): void => {
    const fields = raw.map((f) => f.trim());
    const { header } = state;
    if (header === null) {
      if (state.headerBad) {
        dataRows++;
        return;
      }
      state.header = readHeader(fields, line, issue);
      state.headerBad = state.header === null;
      return;
    }
    dataRows++;
    if (onProgress && dataRows % PROGRESS_EVERY === 0) {
      progressBytes += Buffer.byteLength(text.slice(progressChars, end));
      progressChars = end;
      onProgress(dataRows, progressBytes);
    }

    const expected = header.columns.length;
    if (fields.length !== expected) {
      issue(
        line,
        fields.length < expected ? 'CSV_MISSING_FIELD' : 'CSV_EXTRA_FIELD',
        header.fieldCountMessage(fields.length),
      );
      return;
    }
    const get = (column: Column): string => {
      const i = header.index[column];
      return i < 0 ? '' : fields[i]!;
    };
    let rowOk = true;
    const field = (column: Column, required: boolean, max: number): string => {
      const value = get(column);
      if (required && value === '') {
        issue(line, 'CSV_EMPTY_FIELD', `${column} is empty`);
        rowOk = false;
      } else if (value.length > max) {
        issue(line, 'CSV_TOO_LONG', `${column} is ${value.length} characters, the limit is ${max}`);
        rowOk = false;
      }
      return value;
    };
    const code = field('code', true, CSV_CODE_MAX);
    const name = field('name', true, CSV_TEXT_MAX);
    const matchLabel = field('match_label', true, CSV_TEXT_MAX);
    const typeLabel = field('type_label', false, CSV_TEXT_MAX);
    const dialog = field('dialog', false, CSV_TEXT_MAX);

    const rawDefault = get('is_default');
    const lowered = rawDefault.toLowerCase();
    let isDefault = false;
    if (TRUE_WORDS.has(lowered)) {
      isDefault = true;
    } else if (!FALSE_WORDS.has(lowered)) {
      issue(line, 'CSV_BAD_BOOLEAN', `is_default ${show(rawDefault)} is not one of true/false/1/0/yes/no`);
      rowOk = false;
    }

    if (code !== '') {
      const earlier = codeLines.get(code);
      if (earlier !== undefined) {
        issue(line, 'CSV_DUPLICATE_CODE', `code ${show(code)} already on line ${earlier}`);
        rowOk = false;
      } else {
        codeLines.set(code, line);
      }
    }
    if (isDefault) {
      if (defaultLine !== 0) {
        issue(line, 'CSV_TOO_MANY_DEFAULTS', `is_default is already true on line ${defaultLine}`);
        rowOk = false;
      } else {
        defaultLine = line;
      }
    }

    // Once anything is wrong the rows are never returned; stop keeping them.
    if (rowOk && issueCount === 0) {
      rows.push({
        code,
        name,
        match_label: matchLabel,
        type_label: typeLabel === '' ? null : typeLabel,
        dialog: dialog === '' ? null : dialog,
        is_default: isDefault,
      });
    }
  };

  const syntax = tokenize(text, onRecord);
  if (syntax) {
    issue(syntax.line, 'CSV_BAD_QUOTING', syntax.message);
    return { ok: false, errors: issues, errorCount: issueCount };
  }
  if (state.header === null && !state.headerBad) {
    return {
      ok: false,
      errors: [{ line: 1, code: 'CSV_EMPTY', message: 'the file is empty (no header row)' }],
      errorCount: 1,
    };
  }
  if (state.header !== null && dataRows === 0) {
    issue(state.header.line, 'CSV_EMPTY', 'the file has a header but no rows');
  }
  onProgress?.(dataRows, input.length);
  return issueCount > 0 ? { ok: false, errors: issues, errorCount: issueCount } : { ok: true, rows };
}

function readHeader(
  fields: string[],
  line: number,
  issue: (line: number, code: CsvIssueCode, message: string) => void,
): Header | null {
  const index: Record<Column, number> = {
    code: -1,
    name: -1,
    match_label: -1,
    type_label: -1,
    dialog: -1,
    is_default: -1,
  };
  const unknown: string[] = [];
  const duplicate: string[] = [];
  fields.forEach((name, i) => {
    if (!KNOWN_COLUMNS.has(name)) {
      unknown.push(name);
    } else if (index[name as Column] >= 0) {
      duplicate.push(name);
    } else {
      index[name as Column] = i;
    }
  });
  const missing = REQUIRED_COLUMNS.filter((c) => index[c] < 0);
  const expected = `expected ${REQUIRED_COLUMNS.join(',')} and optionally ${OPTIONAL_COLUMNS.join(',')}, in any order`;
  if (missing.length > 0) {
    issue(line, 'CSV_BAD_HEADER', `missing column(s) ${missing.join(', ')}; ${expected}`);
  }
  if (unknown.length > 0) {
    issue(line, 'CSV_BAD_HEADER', `unknown column(s) ${unknown.map(show).join(', ')}; ${expected}`);
  }
  if (duplicate.length > 0) {
    issue(line, 'CSV_BAD_HEADER', `duplicate column(s) ${duplicate.join(', ')}`);
  }
  if (missing.length + unknown.length + duplicate.length > 0) return null;
  const fieldCountMessage = `expected ${fields.length} fields (${fields.join(',')}), found `;
  return {
    columns: fields as Column[],
    index,
    line,
    fieldCountMessage: (found) => fieldCountMessage + found,
  };
}

/** One line per issue: `catalog.csv:12: CSV_DUPLICATE_CODE: code "pet" already on line 4`. */
export function formatCsvIssues(issues: CsvIssue[], file = 'catalog.csv'): string {
  return issues.map((i) => `${file}:${i.line}: ${i.code}: ${i.message}`).join('\n');
}

/** What follows a capped list of issues: `... and 1999000 more errors`, or '' when all are listed. */
export function moreCsvErrors(result: { errors: CsvIssue[]; errorCount: number }): string {
  const more = result.errorCount - result.errors.length;
  return more > 0 ? `... and ${more} more error${more === 1 ? '' : 's'}` : '';
}
