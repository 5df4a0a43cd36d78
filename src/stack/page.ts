import { readdirSync, readFileSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DashboardPage, PageFile } from './dashboard-server.ts';
import { CachecastError } from '../errors.ts';

/**
 * The dashboard page: src/stack/page/ (index.html, its stylesheet and its
 * script modules), copied beside the compiled code by `npm run build:page`.
 * One page, vanilla JS, no framework, nothing fetched from elsewhere.
 */
export const PAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), 'page');

/** What the page directory may hold, and the type each is served with. */
const TYPES: Record<string, string> = {
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
};

/**
 * The page, read once when the stack starts: index.html, and every other file
 * of the directory, which the dashboard serves by name (the only files it
 * serves). Throws when index.html, a file it links, or a module another
 * imports is missing, or when a file is of a kind the page does not serve:
 * a broken build fails at start, not in the browser.
 */
export function loadPage(dir: string = PAGE_DIR): DashboardPage {
  const names = readdirSync(dir, { withFileTypes: true })
    .filter((entry) => entry.isFile() && !entry.name.startsWith('.'))
    .map((entry) => entry.name);
  if (!names.includes('index.html'))
    throw new CachecastError('STACK_PAGE_INVALID', `${dir}: the dashboard page has no index.html`);
  const html = readFileSync(join(dir, 'index.html'), 'utf8');
  const files = new Map<string, PageFile>();
  for (const name of names) {
    if (name === 'index.html') continue;
    const type = TYPES[extname(name)];
    if (type === undefined) {
      throw new CachecastError(
        'STACK_PAGE_INVALID',
        `${join(dir, name)}: the dashboard serves only ${Object.keys(TYPES).join(' ')} files`,
      );
    }
    files.set(`/${name}`, { type, body: readFileSync(join(dir, name), 'utf8') });
  }
  const wanted = (from: string, ref: string): void => {
    const name = /^(?:\.?\/)?([\w-][\w.-]*)$/.exec(ref)?.[1];
    if (name === undefined || !files.has(`/${name}`)) {
      throw new CachecastError(
        'STACK_PAGE_INVALID',
        `${join(dir, from)} refers to ${ref}, which is not a file of ${dir}`,
      );
    }
  };
  for (const [, ref] of html.matchAll(/<(?:link|script)\b[^>]*\b(?:href|src)="([^"]*)"/g)) {
    wanted('index.html', ref!);
  }
  for (const [path, file] of files) {
    if (!path.endsWith('.js')) continue;
    // Static imports and re-exports (`import … from './x.js'`, `import './x.js'`).
    const imports = /^\s*(?:(?:import|export)\s[^'";]*?\bfrom\s*|import\s*)['"]([^'"]+)['"]/gm;
    for (const [, ref] of file.body.matchAll(imports)) wanted(path.slice(1), ref!);
  }
  return { html, files };
}
