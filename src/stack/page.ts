import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The dashboard page: src/stack/page/ (index.html, its stylesheet and its
 * script module), copied beside the compiled code by `npm run build:page`.
 * One page, vanilla JS, no framework, nothing fetched from elsewhere.
 */
export const PAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), 'page');

const STYLESHEET = '<link rel="stylesheet" href="dashboard.css">';
const SCRIPT = '<script type="module" src="dashboard.js"></script>';

/**
 * The page as one document, its stylesheet and script inlined where
 * index.html links them: the dashboard serves a single response (no asset
 * routes behind the token check, a CSP that allows only inline code).
 */
export function loadPage(dir: string = PAGE_DIR): string {
  const html = readFileSync(join(dir, 'index.html'), 'utf8');
  const css = readFileSync(join(dir, 'dashboard.css'), 'utf8');
  const js = readFileSync(join(dir, 'dashboard.js'), 'utf8');
  if (!html.includes(STYLESHEET) || !html.includes(SCRIPT)) {
    throw new Error(
      `${join(dir, 'index.html')} must link dashboard.css and dashboard.js as ${STYLESHEET} ${SCRIPT}`,
    );
  }
  // Inlined text must not end its own element early.
  if (/<\/style/i.test(css) || /<\/script/i.test(js)) {
    throw new Error(`${dir}: the stylesheet or script contains a closing tag of its element`);
  }
  return html
    .replace(STYLESHEET, () => `<style>\n${css}</style>`)
    .replace(SCRIPT, () => `<script type="module">\n${js}</script>`);
}
