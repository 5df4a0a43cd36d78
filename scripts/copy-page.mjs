// `npm run build:page`: the dashboard page (src/stack/page/: HTML, CSS, a script
// module) is not TypeScript, so tsc does not emit it; copy it beside the
// compiled dashboard (dist/stack/page/), where src/stack/page.ts reads it.
import { cpSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const from = join(root, 'src', 'stack', 'page');
const to = join(root, 'dist', 'stack', 'page');
rmSync(to, { recursive: true, force: true });
cpSync(from, to, { recursive: true });
