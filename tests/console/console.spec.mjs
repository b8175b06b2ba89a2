// The console in a real browser (Debian's Chromium driven by playwright-core): starts
// `sdsim serve` on a free loopback port with a fresh data directory, then registers, signs in
// (with the keyboard), creates a project from `three-tier`, runs it, watches the progress rise
// and the charts fill, crashes an instance of a component while it runs and finds the crash on
// the timeline, reads the report and the bottlenecks, runs it again and compares the two runs,
// and looks at the project on a phone-sized screen; meanwhile it drops the page's WebSocket once
// (the page must resume) and the 12-second access token is rotated (the page must refresh it
// before it expires, with no request refused). A screenshot of each step goes to
// CONSOLE_SHOTS (default target/console-shots). Every wait is for a condition in the page,
// never for a length of time.
//
// Environment:
//   SDSIM_BIN       the sdsim binary (default target/debug/sdsim, or $CARGO_TARGET_DIR/debug/sdsim)
//   CHROMIUM        the browser (default /usr/bin/chromium)
//   CONSOLE_SHOTS   where the screenshots go
//   CONSOLE_WHATIF  "0" when the server has no what-if API: the crash step then checks that the
//                   page says so instead of finding the crash on the timeline

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const targetDir = process.env.CARGO_TARGET_DIR || join(repo, 'target');
const bin = process.env.SDSIM_BIN || join(targetDir, 'debug', 'sdsim');
const shots = process.env.CONSOLE_SHOTS || join(repo, 'target', 'console-shots');
const whatIf = process.env.CONSOLE_WHATIF !== '0';
// Generous: a debug build on a busy machine; every wait ends as soon as its condition holds.
const WAIT = { timeout: 90_000 };

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

async function startServer() {
  const port = await freePort();
  const data = mkdtempSync(join(tmpdir(), 'sdsim-console-'));
  const sets = [
    `gateway.listen=127.0.0.1:${port}`,
    'auth.http_listen=127.0.0.1:0', 'auth.grpc_listen=127.0.0.1:0',
    'project.http_listen=127.0.0.1:0', 'project.grpc_listen=127.0.0.1:0',
    'simulation.http_listen=127.0.0.1:0', 'simulation.grpc_listen=127.0.0.1:0',
    `storage.url=sqlite://${join(data, 'sdsim.db')}`,
    'runtime.shards=2',
    // Short-lived access tokens, so the page must refresh them while the test runs.
    'auth.access_ttl=12s',
  ];
  const child = spawn(bin, ['serve', ...sets.flatMap((s) => ['--set', s])], {
    cwd: data,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (d) => {
    log = (log + d).slice(-20_000);
  });
  const exited = new Promise((ok) => {
    child.once('exit', (code, signal) => ok({ code, signal }));
    child.once('error', (e) => ok({ error: `${bin}: ${e.message}` }));
  });
  const url = `http://127.0.0.1:${port}`;
  // Ready when /health answers; a server that exits first fails the test with its log.
  for (;;) {
    const gone = await Promise.race([exited, new Promise((ok) => setTimeout(() => ok(null), 100))]);
    if (gone) throw new Error(`sdsim exited before serving (${JSON.stringify(gone)}):\n${log}`);
    try {
      if ((await fetch(`${url}/health`)).ok) break;
    } catch {
      // Not listening yet.
    }
  }
  return {
    url,
    log: () => log,
    async stop() {
      child.kill('SIGTERM');
      const end = await exited;
      rmSync(data, { recursive: true, force: true });
      return end;
    },
  };
}

const byTestId = (page, id) => page.locator(`[data-testid="${id}"]`);

async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

async function points(page, id) {
  return Number(await byTestId(page, id).getAttribute('data-points'));
}

async function main() {
  mkdirSync(shots, { recursive: true });
  rmSync(join(shots, 'failure.png'), { force: true });
  const server = await startServer();
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const problems = [];
  let page;
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    // A blocked resource (the Content-Security-Policy), a failed module or an uncaught error
    // shows up here; none is expected.
    // The browser also logs each 4xx answer; the ones this test provokes (the invalid design's
    // 422, and the 405 of a server without what-if) are expected.
    const provoked = whatIf ? /status of 422 / : /status of (422|405) /;
    page.on('console', (m) => {
      if (m.type() === 'error' && !provoked.test(m.text())) problems.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    const refreshes = [];
    page.on('response', (r) => {
      if (r.url().endsWith('/api/auth/refresh')) refreshes.push(r.status());
    });
    // The page's WebSocket goes through this test (routed before the page loads), which drops the first connection after
    // two events: the page must resume where it was (`since`, `epoch`) and miss nothing.
    const sockets = { opened: 0, subscribes: [], lastSeqBeforeDrop: 0, firstSeqAfterResume: null };
    await page.routeWebSocket(/\/ws$/, (ws) => {
      const n = ++sockets.opened;
      const server = ws.connectToServer();
      let dropped = false;
      ws.onMessage((m) => {
        const msg = JSON.parse(m);
        if (msg.op === 'subscribe') sockets.subscribes.push(msg);
        server.send(m);
      });
      let events = 0;
      server.onMessage((m) => {
        if (dropped) return;
        const msg = JSON.parse(m);
        if (msg.op === 'event' && n === 1) {
          events += 1;
          sockets.lastSeqBeforeDrop = msg.seq;
          ws.send(m);
          if (events === 2) {
            dropped = true;
            ws.close({ code: 4001, reason: 'dropped by the test' });
            server.close();
          }
          return;
        }
        if (msg.op === 'event' && n === 2 && sockets.firstSeqAfterResume === null) {
          sockets.firstSeqAfterResume = msg.seq;
        }
        ws.send(m);
      });
    });

    await page.goto(server.url);

    // Register, then sign in with the keyboard only.
    const email = `ada-${Date.now()}@example.com`;
    await byTestId(page, 'email').fill(email);
    await byTestId(page, 'password').fill('correct horse battery staple');
    await byTestId(page, 'register').click();
    await page.getByText(`Account created for ${email}`).waitFor(WAIT);
    await shot(page, '01-registered');
    await byTestId(page, 'password').focus();
    await page.keyboard.press('Enter');
    await byTestId(page, 'template').waitFor(WAIT);
    await page.locator('#template option[value="three-tier"]').waitFor({ state: 'attached', ...WAIT });
    await shot(page, '02-signed-in');

    // A project from the three-tier template: its diagram and design.
    await byTestId(page, 'template').selectOption('three-tier');
    await byTestId(page, 'create-project').click();
    await page.locator('#diagram g.node').first().waitFor(WAIT);
    const boxes = await page.locator('#diagram g.node').count();
    assert.equal(boxes, 5, 'three-tier has five components, each a box');
    assert.ok(await page.locator('#diagram path.edge').count() >= 4, 'the routes are arrows');
    const text = await byTestId(page, 'design-editor').inputValue();
    assert.equal(JSON.parse(text).components.length, 5);

    // The server's validation problems appear beside their field.
    const design = JSON.parse(text);
    design.components[2].routes[0].p = 1.5;
    await byTestId(page, 'design-editor').fill(JSON.stringify(design));
    await byTestId(page, 'save-design').click();
    await byTestId(page, 'problems').getByText('$.components[2].routes[0].p').waitFor(WAIT);
    assert.ok(await page.locator('.gutter .mark').count() >= 1, 'the line of the field is marked');
    await shot(page, '03-validation-problem');
    // Fixed, and with a third app instance: a new version, and the diagram shows it.
    design.components[2].routes[0].p = 0.7;
    design.components[2].instances = 3;
    await byTestId(page, 'design-editor').fill(JSON.stringify(design));
    await byTestId(page, 'save-design').click();
    await byTestId(page, 'problems').getByText('Saved as version 2').waitFor(WAIT);
    await page.locator('#diagram g.node[data-component="app"]', { hasText: '×3' }).waitFor(WAIT);

    // Run it and watch: progress rises, the charts receive points.
    await page.evaluate(() => {
      window.progressSeen = [];
      window.statusSeen = [];
      const text = document.querySelector('#progress-text');
      new MutationObserver(() => window.progressSeen.push(parseInt(text.textContent, 10)))
        .observe(text, { childList: true, characterData: true, subtree: true });
      const status = document.querySelector('#run-status');
      new MutationObserver(() => window.statusSeen.push(status.textContent))
        .observe(status, { childList: true, characterData: true, subtree: true });
    });
    await byTestId(page, 'run-duration').fill('120');
    await byTestId(page, 'run-speed').fill('20');
    await byTestId(page, 'run').click();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="chart-throughput"]').dataset.points) > 0, null, WAIT);
    await shot(page, '04-running');

    // Crash one instance of `app` while the run goes on.
    await byTestId(page, 'component-select').selectOption('app');
    await byTestId(page, 'inject-crash').click();
    if (whatIf) {
      await byTestId(page, 'whatif-message').getByText('Accepted at').waitFor(WAIT);
      // The crash as the run recorded it (live stream or final report), not only as sent.
      await byTestId(page, 'timeline').locator('li[data-source="run"]', { hasText: 'crash' }).waitFor(WAIT);
    } else {
      await byTestId(page, 'whatif-message').getByText('what-if not available').waitFor(WAIT);
    }
    await shot(page, '05-crash');

    // The end: 100 %, the report and the bottleneck analysis.
    await byTestId(page, 'progress').getByText('100%').waitFor(WAIT);
    const seen = await page.evaluate(() => window.progressSeen);
    assert.ok(seen.some((p) => p > 0 && p < 100), `progress rose through intermediate values: ${seen}`);
    await byTestId(page, 'report').locator('dl.figures').waitFor(WAIT);
    await byTestId(page, 'bottlenecks').locator('li.finding').first().waitFor(WAIT);
    assert.ok(await points(page, 'chart-throughput') > 1);
    assert.ok(await points(page, 'chart-latency') > 0);
    assert.ok(await points(page, 'chart-utilisation') > 0);
    assert.ok(await points(page, 'chart-queue') > 0);
    await shot(page, '06-report');

    // The dropped connection was resumed from the last event the page had, with nothing lost.
    assert.ok(sockets.opened >= 2, `the page reconnected (${sockets.opened} connections)`);
    const [first, resumed] = sockets.subscribes;
    assert.equal(first.since, 0);
    assert.equal(resumed.since, sockets.lastSeqBeforeDrop);
    assert.ok(resumed.epoch, 'the resume names the epoch');
    assert.equal(sockets.firstSeqAfterResume, sockets.lastSeqBeforeDrop + 1, 'no event was skipped');
    const statuses = await page.evaluate(() => window.statusSeen);
    assert.ok(statuses.some((t) => t.includes('missed points recovered')), statuses.join('\n'));

    // A second run, flat out, and the two side by side.
    await byTestId(page, 'run-speed').fill('0');
    await page.waitForFunction(() => !document.querySelector('[data-testid="run"]').disabled, null, WAIT);
    await byTestId(page, 'run').click();
    await page.locator('[data-testid="run-list"] input[type=checkbox]:not([disabled])').nth(1).waitFor(WAIT);
    const boxesToTick = page.locator('[data-testid="run-list"] input[type=checkbox]:not([disabled])');
    await boxesToTick.nth(0).check();
    await boxesToTick.nth(1).check();
    await byTestId(page, 'compare').click();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="chart-compare-p99"]')?.dataset.points) > 0, null, WAIT);
    await shot(page, '07-compare');

    // A phone: nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForFunction(() => document.documentElement.scrollWidth <= 390, null, WAIT);
    await shot(page, '08-phone');

    // The 12-second access token was rotated before it expired (a 401 on the way would be a
    // console error above), and the page goes on working with the new one.
    if (!refreshes.length) await page.waitForResponse((r) => r.url().endsWith('/api/auth/refresh'), WAIT);
    assert.ok(refreshes.length >= 1 && refreshes.every((s) => s === 200), `refreshes: ${refreshes}`);
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.locator('a.brand').click();
    await page.locator('#project-list a').first().waitFor(WAIT);

    // Sign out: back to the sign-in form.
    await byTestId(page, 'sign-out').click();
    await byTestId(page, 'sign-in').waitFor(WAIT);
    assert.deepEqual(problems, [], 'no console errors and no blocked resources');
    await context.close();
  } catch (e) {
    // What the page showed when a step failed.
    if (page) await shot(page, 'failure').catch(() => {});
    throw e;
  } finally {
    await browser.close();
    const end = await server.stop();
    if (end.code !== 0) {
      problems.push(`sdsim did not exit cleanly on SIGTERM: ${JSON.stringify(end)}\n${server.log()}`);
    }
  }
  assert.deepEqual(problems, []);
  console.log(`console test passed; screenshots in ${shots}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
