#!/usr/bin/env node
// npm prestart/pretest guard: makes sure dependencies are installed and that dawn.node finds a
// real WebGPU adapter (not the null backend), installing the system pieces through
// scripts/setup-system.sh when they are missing. With --tests it also needs ONNX's
// conformance data. Fast path (everything present) is one short child process.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const forTests = process.argv.includes('--tests');
const SETUP_COMMAND = 'sudo bash scripts/setup-system.sh';
/** What the tests read or run from the system: ONNX conformance cases, Fashion-MNIST, sample photos, Pillow, Chromium. */
const TEST_DATA = [
  ['/usr/share/libonnx-testdata/data', 'Debian package libonnx-testdata'],
  ['/usr/share/datasets/fashion-mnist', 'Debian package dataset-fashion-mnist'],
  ['/usr/share/darknet/data/dog.jpg', "darknet's sample photographs (unpacked from Debian's darknet .deb)"],
  [
    '/usr/lib/python3/dist-packages/PIL',
    'Debian package python3-pil (Pillow, the pixel reference of test/data-pillow.test.ts)',
  ],
  ['/usr/lib/python3/dist-packages/onnx', "Debian package python3-onnx (ONNX's checker, run on the codec's output)"],
  [
    '/usr/lib/python3/dist-packages/numpy',
    'Debian package python3-numpy (safetensors files written and read by numpy)',
  ],
  [
    '/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz',
    "scikit-learn's digits (unpacked from Debian's python3-sklearn .deb)",
  ],
  ['/usr/bin/chromium', 'Debian package chromium (WebGPU on SwiftShader for scripts/test-browser.mjs)'],
];

// Runs in a child: a crash or hang inside Dawn must not take this script down with it.
const ADAPTER_PROBE = `
import { create, globals } from 'webgpu';
Object.assign(globalThis, globals);
const gpu = create([]);
const adapter = await gpu.requestAdapter();
const info = adapter?.info;
console.log('ADAPTER ' + JSON.stringify(info ? {
  vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description,
} : null));
`;

function main() {
  if (!dependenciesInstalled()) {
    console.error('ensure-platform: npm dependencies are missing or older than package-lock.json; running `npm ci`');
    const npm = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], {
      cwd: repoRoot,
      stdio: 'inherit',
      // onnxruntime-node's install step downloads CUDA binaries from outside the registry and
      // fails offline; its CPU and WebGPU providers are bundled and need none of it.
      env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' },
    });
    if (npm.status !== 0 || !dependenciesInstalled()) fail('`npm ci` failed: run it by hand and read its error');
  }

  let probe = probeAdapter();
  if (!probe.ok) {
    console.error(`ensure-platform: ${probe.problem}; installing a Vulkan driver with scripts/setup-system.sh`);
    runSetup({ skipTestdata: !forTests });
    probe = probeAdapter();
    if (!probe.ok) {
      fail(
        `${probe.problem}.\nInstall a Vulkan driver Dawn accepts (Mesa lavapipe 25 from bookworm-backports) with:\n` +
          `  ${SETUP_COMMAND}\n${probe.details}`,
      );
    }
  }

  const missing = () => TEST_DATA.filter(([path]) => !existsSync(path));
  if (forTests && missing().length) {
    console.error(
      `ensure-platform: test data missing (${missing()
        .map(([p]) => p)
        .join(', ')}); installing with scripts/setup-system.sh`,
    );
    runSetup({ skipTestdata: false });
    if (missing().length) {
      fail(
        `test data still missing: ${missing()
          .map(([p, what]) => `${p} (${what})`)
          .join('; ')}. Install it with:\n  ${SETUP_COMMAND}`,
      );
    }
  }

  const a = probe.adapter;
  console.log(`ensure-platform: WebGPU adapter ${a.vendor}/${a.architecture} "${a.description || a.device}"`);
}

/** node_modules exists and is at least as new as the lock file npm last installed from. */
function dependenciesInstalled() {
  const marker = join(repoRoot, 'node_modules', '.package-lock.json');
  if (!existsSync(join(repoRoot, 'node_modules', 'webgpu')) || !existsSync(marker)) return false;
  const lock = join(repoRoot, 'package-lock.json');
  return !existsSync(lock) || statSync(marker).mtimeMs >= statSync(lock).mtimeMs;
}

function probeAdapter() {
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', ADAPTER_PROBE], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 30_000,
  });
  const details =
    `adapter probe: exit ${child.status}${child.signal ? `, signal ${child.signal}` : ''}\n${child.stderr ?? ''}`.trim();
  const line = /^ADAPTER (.*)$/m.exec(child.stdout ?? '');
  if (child.status !== 0 || !line) return { ok: false, problem: 'the WebGPU adapter probe failed', details };
  const adapter = JSON.parse(line[1]);
  if (!adapter) return { ok: false, problem: 'dawn.node found no WebGPU adapter', details };
  const fields = [adapter.vendor, adapter.architecture, adapter.device, adapter.description];
  if (fields.some((f) => /null[\s_-]*backend/i.test(f ?? ''))) {
    return { ok: false, problem: 'dawn.node offers only its null backend, which runs nothing', details };
  }
  return { ok: true, adapter };
}

function runSetup({ skipTestdata }) {
  const result = spawnSync('bash', [join(repoRoot, 'scripts', 'setup-system.sh')], {
    cwd: repoRoot,
    stdio: 'inherit',
    env: { ...process.env, ...(skipTestdata ? { GRAFT_SKIP_TESTDATA: '1' } : {}) },
  });
  if (result.status !== 0) {
    console.error(`ensure-platform: scripts/setup-system.sh failed (exit ${result.status ?? result.signal})`);
  }
}

function fail(message) {
  console.error(`ensure-platform: ${message}`);
  process.exit(1);
}

main();
