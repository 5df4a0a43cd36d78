// The dashboard in a real browser (Debian's chromium, headless, driven by
// playwright-core): the page lists every process live, and its log in / log
// out buttons show both ext-authz instances refusing the token, with the
// measured propagation time.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import type { Browser, Page } from 'playwright-core';
import type { StackProcess } from '../support/stack-process.ts';
import { startStackProcess } from '../support/stack-process.ts';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const PROCESSES = ['auth', 'ext-authz-1', 'ext-authz-2', 'catalog', 'match-worker-1', 'match-worker-2'];

let stack: StackProcess;
let browser: Browser;
let page: Page;
const pageErrors: string[] = [];

before(async () => {
  assert.ok(
    existsSync(CHROMIUM),
    `no browser at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`,
  );
  stack = await startStackProcess();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  page.on('console', (msg) => {
    if (msg.type() === 'error') pageErrors.push(msg.text());
  });
});

after(async () => {
  await browser?.close();
  await stack?.cleanup();
});

describe('the dashboard in a browser', () => {
  it('lists every process and its replicas, live', async () => {
    await page.goto(stack.url);
    await page.waitForSelector('#live:text("live")');
    for (const id of PROCESSES) {
      await page.waitForSelector(`[data-testid=process][data-id="${id}"][data-status=ready]`, {
        timeout: 30_000,
      });
    }
    const cards = await page.locator('[data-testid=process]').all();
    assert.deepEqual(await Promise.all(cards.map((card) => card.getAttribute('data-id'))), PROCESSES);
    assert.equal(await page.textContent('#summary'), '6/6 ready');
    // Replica rows: the catalog holders show the 13 sample characters, ext-authz its blacklist.
    for (const id of ['catalog', 'match-worker-1', 'match-worker-2']) {
      const state = await page.getAttribute(
        `[data-testid=process][data-id="${id}"] tr[data-dataset=catalog]`,
        'data-state',
      );
      assert.equal(state, 'ready');
    }
    await page.waitForSelector('[data-testid=process][data-id="ext-authz-2"] tr[data-dataset=blacklist]');
    // The sample catalog is listed from the catalog service.
    await page.waitForSelector('#characters tr[data-code="eco-plastic"]');
  });

  it('log in, then log out: both ext-authz instances refuse the token, with the time it took', async () => {
    await page.fill('#user', 'browser-user');
    await page.click('[data-testid=login]');
    await page.waitForSelector('[data-testid=checks] tr[data-instance="ext-authz-2"]');
    for (const instance of ['ext-authz-1', 'ext-authz-2']) {
      const row = `[data-testid=checks] tr[data-instance="${instance}"]`;
      assert.equal(await page.getAttribute(row, 'data-status'), '200');
      assert.match((await page.textContent(row)) ?? '', /allow \(browser-user\)/);
    }

    await page.click('[data-testid=logout]');
    await page.waitForSelector('[data-testid=logout-result]', { timeout: 10_000 });
    assert.equal(await page.getAttribute('[data-testid=logout-result]', 'data-all-refused'), 'true');
    for (const instance of ['ext-authz-1', 'ext-authz-2']) {
      const row = `[data-testid=propagation] tr[data-instance="${instance}"]`;
      assert.equal(await page.getAttribute(row, 'data-status'), '401');
      assert.equal(await page.getAttribute(row, 'data-error'), 'token_revoked');
      // A measured time (the action's limit is 5 s); absent or empty when not refused.
      const refusedMs = await page.getAttribute(row, 'data-refused-ms');
      assert.match(refusedMs ?? '', /^\d+(\.\d+)?$/, `${instance}: refused after ${refusedMs} ms`);
      assert.match((await page.textContent(row)) ?? '', /401 token_revoked.*\d ms/);
    }
    // The decisions table shows both instances denying it, and the bus its blacklist event.
    await page.waitForSelector('#decisions tr[data-instance="ext-authz-1"][data-allow=false]');
    await page.waitForSelector('#decisions tr[data-instance="ext-authz-2"][data-allow=false]');
    await page.waitForSelector('#bus-events tr[data-type=blacklist_added]');
    const screenshot = process.env.DASHBOARD_SCREENSHOT;
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
    assert.deepEqual(pageErrors, []);
  });
});
