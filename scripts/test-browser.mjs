// npm run test:browser: the portable cases (test/portable/cases.ts) in Debian's Chromium, whose
// WebGPU runs on SwiftShader (flags from docs/platform.md), driven by playwright-core. Fixtures
// are made in Node, the cases bundled by esbuild, and page + bundle + fixtures served on
// 127.0.0.1 (a free port). Prints `N passed, M failed`; exits non-zero on any failure.
// Arguments: [--fixtures <dir>] (made before) [group …] ('bad input', programs, forward, model, training).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { bundleForBrowser } from './browser-bundle.mjs';
import { URLSearchParams } from 'node:url';
import { CHROMIUM, launchWebGpuChromium } from '../test/helpers/chromium.mjs';
import { fixturesFromArgs, REPO_ROOT } from '../test/portable/make-fixtures-process.mjs';

const RUNTIME = 'chromium/swiftshader';
/** The whole run in the page; a hang fails here, under test/portable.test.ts's limit, closing the browser. */
const PAGE_TIMEOUT_MS = 240_000;

if (!fs.existsSync(CHROMIUM)) {
  console.error(`test-browser: ${CHROMIUM} is missing; install Debian's chromium (sudo bash scripts/setup-system.sh)`);
  process.exit(1);
}

const PAGE = `<!doctype html><meta charset="utf-8"><title>onnx-graft portable cases</title>
<script type="module" src="bundle.js"></script>`;
const TYPES = { '.js': 'text/javascript', '.html': 'text/html', '.json': 'application/json' };

/** Serves the page, the bundle and (under fixtures/) the fixture folder, nothing else. */
function serve(bundle, fixtures) {
  const server = http.createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1');
    const send = (status, body, type = 'application/octet-stream') => {
      response.writeHead(status, { 'content-type': type });
      response.end(body);
    };
    if (url.pathname === '/' || url.pathname === '/index.html') return send(200, PAGE, TYPES['.html']);
    if (url.pathname === '/favicon.ico') return send(204, '');
    if (url.pathname === '/bundle.js') return send(200, bundle, TYPES['.js']);
    if (url.pathname.startsWith('/fixtures/')) {
      const file = path.resolve(fixtures, decodeURIComponent(url.pathname.slice('/fixtures/'.length)));
      if (!file.startsWith(fixtures + path.sep) || !fs.existsSync(file)) return send(404, 'not found', 'text/plain');
      return send(200, fs.readFileSync(file), TYPES[path.extname(file)]);
    }
    send(404, 'not found', 'text/plain');
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function main() {
  const { dir: fixtures, owned, groups } = fixturesFromArgs(process.argv.slice(2), 'graft-browser-');
  let server;
  let browser;
  try {
    const bundled = await bundleForBrowser(path.join(REPO_ROOT, 'test/portable/browser-main.ts'));
    server = await serve(bundled, fixtures);
    const { port } = server.address();
    browser = await launchWebGpuChromium();
    const page = await browser.newPage();
    page.on('console', (message) => console.log(message.text()));
    page.on('pageerror', (error) => console.log(`page error: ${error.message}`));
    const query = new URLSearchParams([['runtime', RUNTIME], ...groups.map((g) => ['group', g])]);
    const loaded = performance.now();
    await page.goto(`http://127.0.0.1:${port}/?${query}`);
    const handle = await page.waitForFunction(() => globalThis.portableResult, undefined, {
      timeout: PAGE_TIMEOUT_MS,
      polling: 500,
    });
    const result = await handle.jsonValue();
    console.log(`page loaded and ran in ${((performance.now() - loaded) / 1000).toFixed(1)} s`);
    if ('error' in result) {
      console.log(`${RUNTIME}: the cases stopped: ${result.error}`);
      return 1;
    }
    console.log(`${RUNTIME} (${result.adapter}): ${result.passed} passed, ${result.failed} failed`);
    return result.failed > 0 || result.passed === 0 ? 1 : 0;
  } finally {
    await browser?.close();
    server?.close();
    if (owned) fs.rmSync(fixtures, { recursive: true, force: true });
  }
}

main().then(
  (status) => process.exit(status),
  (error) => {
    console.error(`test-browser: ${error instanceof Error ? error.message : error}`);
    process.exit(1);
  },
);
