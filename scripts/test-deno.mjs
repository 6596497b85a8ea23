// npm run test:deno: the portable cases (test/portable/cases.ts) under Deno, whose WebGPU is
// wgpu (shaders compiled by Naga). Fixtures are made in Node first, in a temporary folder that
// Deno may read and nothing else. Prints `N passed, M failed`; exits non-zero on any failure.
// Arguments: [--fixtures <dir>] (made before) [group …] ('bad input', programs, forward, model, training).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fixturesFromArgs, REPO_ROOT } from '../test/portable/make-fixtures-process.mjs';

const DENO_TIMEOUT_MS = 240_000;
const deno = path.join(REPO_ROOT, 'node_modules', '.bin', 'deno');
if (!fs.existsSync(deno)) {
  console.error(`test-deno: ${deno} is missing; install the dev dependencies (the 'deno' npm package)`);
  process.exit(1);
}

let fixtures, owned, groups;
try {
  ({ dir: fixtures, owned, groups } = fixturesFromArgs(process.argv.slice(2), 'graft-deno-'));
} catch (error) {
  console.error(`test-deno: ${error.message}`);
  process.exit(1);
}
let status = 1;
try {
  const child = spawnSync(
    deno,
    [
      'run',
      '--unstable-webgpu',
      // Bare imports (protobufjs) resolve from the project's node_modules, as under Node.
      '--node-modules-dir=manual',
      `--allow-read=${fixtures}`,
      '--no-prompt',
      path.join(REPO_ROOT, 'test/portable/deno-main.ts'),
      fixtures,
      ...groups,
    ],
    // Bounded here, under the vitest wrapper's limit, so that a hang ends deno too (a killed
    // wrapper would leave this grandchild running).
    { cwd: REPO_ROOT, stdio: 'inherit', timeout: DENO_TIMEOUT_MS, killSignal: 'SIGKILL' },
  );
  status = child.status ?? 1;
  if (child.signal) {
    const timedOut = child.error?.code === 'ETIMEDOUT';
    console.error(
      `test-deno: deno/wgpu ${timedOut ? `ran past ${DENO_TIMEOUT_MS / 1000} s and was killed` : `died of ${child.signal}`}`,
    );
  } else if (child.error) console.error(`test-deno: could not start deno: ${child.error.message}`);
} finally {
  if (owned) fs.rmSync(fixtures, { recursive: true, force: true });
}
process.exit(status);
