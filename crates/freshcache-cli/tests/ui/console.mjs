// Drives the freshness console in the system's headless Chromium.
//
//   node console.mjs BASE_URL SCREENSHOT_DIR
//
// The environment gives CONSOLE_TOKEN (the service's token), CONSOLE_TYPES (comma-separated
// data types the page must show), CONSOLE_STALE_TYPE (the type that must be marked stale),
// CONSOLE_RUN (a guard run whose audit must show a stale signal) and CHROMIUM (the browser,
// default /usr/bin/chromium). Exits non-zero, saying why, on the first failed expectation.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';

const [base, shots] = process.argv.slice(2);
assert.ok(base && shots, 'usage: node console.mjs BASE_URL SCREENSHOT_DIR');
const env = (name) => {
  const v = process.env[name];
  assert.ok(v, `${name} is not set`);
  return v;
};
const token = env('CONSOLE_TOKEN');
const types = env('CONSOLE_TYPES').split(',');
const staleType = env('CONSOLE_STALE_TYPE');
const run = env('CONSOLE_RUN');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
assert.ok(existsSync(executablePath),
  `no browser at ${executablePath}: install Debian's chromium (apt-get install chromium)`);

const origin = new URL(base).origin;
const problems = [];
const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith('data:') && new URL(u).origin !== origin) problems.push(`request to another host: ${u}`);
  });
  const step = (what) => console.log(`console test: ${what}`);

  // Without the token the page is a 401 sign-in form; a wrong token is refused, the right one opens it.
  const first = await page.goto(`${base}/ui`);
  assert.equal(first.status(), 401, 'the page without the token');
  await page.fill('#token', 'not-the-token');
  await Promise.all([page.waitForNavigation(), page.press('#token', 'Enter')]);
  assert.match(await page.textContent('#note'), /not this service's token/);
  await page.fill('#token', token);
  const [signedIn] = await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  assert.equal(signedIn.status(), 200, 'the page after signing in');
  // The browser reports each 401 answer of the sign-in form as a failed load; nothing else may
  // have gone wrong before signing in, and nothing at all after.
  const beforeSignIn = problems.splice(0);
  for (const p of beforeSignIn) assert.match(p, /status of 401/, 'before signing in');
  step('signed in');

  // Every seeded type is listed; the stale one says so in words, not colour alone.
  const typesTable = page.locator('#types tbody');
  for (const t of types) {
    await typesTable.locator('tr', { hasText: t }).first().waitFor({ timeout: 10000 });
  }
  const staleRow = typesTable.locator('tr', { hasText: staleType });
  const staleText = await staleRow.innerText();
  assert.match(staleText, /\bstale\b/i, `the ${staleType} row says stale: ${staleText}`);
  assert.ok(await staleRow.locator('.badge.bad').count() > 0, 'the stale word is on a warning badge');
  step(`types shown: ${types.join(', ')}; ${staleType} marked stale`);

  // The run is reachable by keyboard: focus its button and press Enter to open its audit.
  const runButton = page.locator(`#runs button[data-run="${run}"]`);
  await runButton.waitFor();
  await runButton.focus();
  await page.keyboard.press('Enter');
  const audit = page.locator('#audit');
  await audit.waitFor({ state: 'visible' });
  const auditRow = page.locator('#audit-table tbody tr', { hasText: staleType });
  await auditRow.first().waitFor({ timeout: 10000 });
  assert.match(await auditRow.first().innerText(), /\bstale\b/i, 'the audit row of the stale signal');
  assert.match(await page.locator('#audit-table tbody').innerText(), /\bmissing\b/i, 'a missing signal');
  assert.equal(await runButton.getAttribute('aria-expanded'), 'true');
  assert.equal(await page.evaluate(() => document.activeElement && document.activeElement.id), 'h-audit',
    'focus moves to the audit');
  step(`audit of ${run} opened with the keyboard`);

  // It refreshes itself without a full reload: the status line changes, the document stays.
  await page.evaluate(() => { window.__sameDocument = true; });
  const before = await page.textContent('#status');
  await page.waitForFunction((b) => document.getElementById('status').textContent !== b, before,
    { timeout: 12000 });
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no reload');
  assert.match(await page.textContent('#status'), /updated/);
  step('refreshed in place');

  // On a wide screen every panel's table fits its panel (no scrolling inside a panel).
  const clipped = await page.$$eval('.scroll', (els) => els
    .filter((e) => e.offsetParent !== null && e.scrollWidth > e.clientWidth)
    .map((e) => e.querySelector('table').id));
  assert.deepEqual(clipped, [], 'tables wider than their panels at 1400 px');
  await page.screenshot({ path: path.join(shots, 'console.png'), fullPage: true });

  // A phone's width: nothing wider than the screen.
  await page.setViewportSize({ width: 375, height: 800 });
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => done())));
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than a 375 px screen`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(shots, 'console-phone.png') }); // the first screen
  step('fits 375 px');
} finally {
  await browser.close();
}
assert.deepEqual(problems, [], 'console errors, page errors or outside requests');
console.log('console test: passed');
