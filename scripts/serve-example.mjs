// npm run example: bundles examples/browser/main.ts with esbuild and serves the example page, its
// bundle and stylesheet, and models-onnx/ (the shipped source network and samples) on 127.0.0.1.
// Prints the page's URL; runs until stopped (Ctrl-C).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleForBrowser } from './browser-bundle.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PAGE_DIR = path.join(ROOT, 'examples/browser');
const MODELS_DIR = path.join(ROOT, 'models-onnx');
const DEFAULT_PORT = 8080;

const HELP = `usage: node scripts/serve-example.mjs [--port N]

Serves the onnx-graft example page (examples/browser: open an ONNX model, see its layers and cut
points, fine-tune it on your images or the shipped Fashion-MNIST sample with WebGPU, predict,
download the tuned .onnx) on http://127.0.0.1:N/ (default ${DEFAULT_PORT}; 0 picks a free port).
Open the printed URL in a browser with WebGPU (Chrome/Chromium 113+, Edge, Safari 26+).`;

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.onnx': 'application/octet-stream',
  '.gz': 'application/gzip',
  '.md': 'text/plain; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

function parseArgs(argv) {
  let port = DEFAULT_PORT;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') return { help: true };
    if (arg === '--port' || arg.startsWith('--port=')) {
      const value = arg === '--port' ? argv[++i] : arg.slice('--port='.length);
      port = Number(value);
      if (value === undefined || !/^\d+$/.test(value) || port > 65535)
        throw new Error(
          `--port: expected an integer from 0 to 65535, got ${value === undefined ? 'nothing' : `'${value}'`}`,
        );
      continue;
    }
    throw new Error(`unknown argument '${arg}'; accepted: --port N, --help`);
  }
  return { port };
}

async function bundle() {
  const bundled = await bundleForBrowser(path.join(PAGE_DIR, 'main.ts'), { minify: true });
  return bundled;
}

/** A file under `dir` named by the URL's remaining path, or undefined (outside it, or missing). */
function fileUnder(dir, relative) {
  const file = path.resolve(dir, relative);
  if (!file.startsWith(dir + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) return undefined;
  return file;
}

function serve(script, port) {
  const server = http.createServer((request, response) => {
    const send = (status, body, type = 'text/plain; charset=utf-8') => {
      response.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      response.end(body);
    };
    let pathname;
    try {
      pathname = decodeURIComponent(new URL(request.url ?? '/', 'http://127.0.0.1').pathname);
    } catch {
      return send(400, 'bad request');
    }
    if (pathname === '/') pathname = '/index.html';
    if (pathname === '/main.js') return send(200, script, TYPES['.js']);
    if (pathname === '/favicon.ico') return send(204, '');
    const file = pathname.startsWith('/models-onnx/')
      ? fileUnder(MODELS_DIR, pathname.slice('/models-onnx/'.length))
      : ['/index.html', '/style.css'].includes(pathname)
        ? fileUnder(PAGE_DIR, pathname.slice(1))
        : undefined;
    if (!file) return send(404, `not found: ${pathname}`);
    send(200, fs.readFileSync(file), TYPES[path.extname(file)] ?? 'application/octet-stream');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.help) {
    console.log(HELP);
    return;
  }
  const server = await serve(await bundle(), args.port);
  console.log(`onnx-graft example page: http://127.0.0.1:${server.address().port}/`);
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((error) => {
  console.error(`serve-example: ${error instanceof Error ? error.message : error}`);
  process.exit(1);
});
