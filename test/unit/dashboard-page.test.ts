// The dashboard's page as files: src/stack/page.ts reads every file of the
// page directory (and fails when one the page needs is missing), and the
// dashboard server answers exactly those paths, behind the page's own gate.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { StackActions } from '../../src/stack/actions/stack-actions.ts';
import { DashboardServer } from '../../src/stack/dashboard-server.ts';
import { loadPage, PAGE_DIR } from '../../src/stack/page.ts';

const TOKEN = 'dashboard-token-0123456789abcdef';

/** A request sent as written: the path is not normalized on the way out. */
function get(
  port: number,
  path: string,
  headers: Record<string, string>,
): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers, setHost: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function withDashboard(loopback: boolean, run: (port: number) => Promise<void>): Promise<void> {
  const server = new DashboardServer({
    page: loadPage(),
    snapshot: () => ({ processes: [] }),
    history: () => ({ bus: [], activity: [] }),
    actions: {} as StackActions,
    token: TOKEN,
    loopback,
  });
  const port = await server.listen(0, '127.0.0.1');
  try {
    await run(port);
  } finally {
    await server.close();
  }
}

const page = loadPage();
const modules = [...page.files.keys()].filter((path) => path.endsWith('.js'));

describe('dashboard page files', () => {
  it('are every file of the page directory: the entry module, the modules it imports, the stylesheet', () => {
    assert.ok(modules.includes('/dashboard.js'), 'the entry module');
    assert.ok(modules.length > 1, 'split into modules');
    assert.ok(page.files.has('/dashboard.css'));
    assert.match(page.html, /<script type="module" src="dashboard\.js"><\/script>/);
    assert.doesNotMatch(page.html, /<style|style=|<script>/, 'nothing inline');
  });

  it('fail the stack at start when one the page needs is missing or of an unknown kind', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cachecast-page-'));
    try {
      cpSync(PAGE_DIR, dir, { recursive: true });
      assert.equal(loadPage(dir).files.size, page.files.size);
      rmSync(join(dir, 'dom.js'));
      assert.throws(() => loadPage(dir), /refers to \.\/dom\.js/);
      cpSync(PAGE_DIR, dir, { recursive: true });
      rmSync(join(dir, 'dashboard.css'));
      assert.throws(() => loadPage(dir), /index\.html refers to dashboard\.css/);
      cpSync(PAGE_DIR, dir, { recursive: true });
      writeFileSync(join(dir, 'notes.txt'), 'not served');
      assert.throws(() => loadPage(dir), /notes\.txt: the dashboard serves only/);
      rmSync(dir, { recursive: true });
      cpSync(PAGE_DIR, dir, { recursive: true });
      rmSync(join(dir, 'index.html'));
      assert.throws(() => loadPage(dir), /no index\.html/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('are served each with its content type, under the CSP of the page; anything else is 404', async () => {
    await withDashboard(true, async (port) => {
      const host = `127.0.0.1:${port}`;
      const index = await get(port, '/', { host });
      assert.equal(index.status, 200);
      const csp = String(index.headers['content-security-policy']);
      assert.match(csp, /script-src 'self'/);
      assert.match(csp, /style-src 'self'/);
      assert.doesNotMatch(csp, /unsafe-inline/);
      for (const path of modules) {
        const res = await get(port, path, { host });
        assert.equal(res.status, 200, path);
        assert.match(String(res.headers['content-type']), /^text\/javascript\b/, path);
        assert.equal(res.headers['content-security-policy'], csp, path);
        assert.equal(res.headers['x-content-type-options'], 'nosniff', path);
        assert.equal(res.body, page.files.get(path)!.body, path);
      }
      const css = await get(port, '/dashboard.css', { host });
      assert.equal(css.status, 200);
      assert.match(String(css.headers['content-type']), /^text\/css\b/);

      for (const path of [
        '/nope.js',
        '/DOM.JS',
        '/dom.js/',
        '/page/dom.js',
        '/../page.ts',
        '/%2e%2e/page.ts',
        '/..%2fpage.ts',
        '/../../package.json',
        '/%2e%2e/%2e%2e/package.json',
        '//etc/passwd',
        '/.prettierrc',
      ]) {
        const res = await get(port, path, { host });
        assert.equal(res.status, 404, path);
        assert.doesNotMatch(String(res.headers['content-type']), /javascript/, path);
      }
    });
  });

  it('are refused without the token where the page is (off loopback)', async () => {
    await withDashboard(false, async (port) => {
      const host = `192.0.2.7:${port}`;
      assert.equal((await get(port, '/', { host })).status, 401);
      for (const path of [...page.files.keys()]) {
        const refused = await get(port, path, { host });
        assert.equal(refused.status, 401, path);
        assert.doesNotMatch(refused.body, /import|function/, path);
        assert.equal(
          (await get(port, path, { host, authorization: 'Bearer wrong-token-0123456789' })).status,
          401,
        );
        assert.equal((await get(port, path, { host, authorization: `Bearer ${TOKEN}` })).status, 200, path);
      }
      const landing = await get(port, `/?token=${TOKEN}`, { host });
      const cookie = String(landing.headers['set-cookie']?.[0]).split(';')[0]!;
      for (const path of modules) assert.equal((await get(port, path, { host, cookie })).status, 200, path);
    });
  });
});
