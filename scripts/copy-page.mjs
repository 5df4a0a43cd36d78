// `npm run build:page`: the dashboard page (src/stack/page/: HTML, CSS, script
// modules) is not TypeScript, so tsc does not emit it; copy every file of it
// beside the compiled dashboard (dist/stack/page/), where src/stack/page.ts
// reads them. A fresh copy: a file removed from the page leaves none behind.
import { cpSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const from = join(root, 'src', 'stack', 'page');
const to = join(root, 'dist', 'stack', 'page');
rmSync(to, { recursive: true, force: true });
cpSync(from, to, { recursive: true });
