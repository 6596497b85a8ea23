// dawn.node dies with the process when V8 collects its instance while a device lives
// (platform.md, "dawn.node lifetime"). A child process holding only the GpuContext runs a
// busy, GC-heavy dispatch loop; it must verify every dispatch and then exit on its own.

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const childScript = fileURLToPath(new URL('./fixtures/keepalive-child.ts', import.meta.url));
const CHILD_TIMEOUT_MS = 90_000;

describe('GpuContext keeps the Dawn instance alive', () => {
  it(
    'survives thousands of dispatches under forced GC, then exits after dispose',
    () => {
      const started = Date.now();
      const child = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', childScript], {
        cwd: repoRoot,
        encoding: 'utf8',
        timeout: CHILD_TIMEOUT_MS,
        env: { ...process.env, KEEPALIVE_DURATION_MS: '4000' },
      });
      const elapsedMs = Date.now() - started;
      const diagnostics = `exit ${child.status}, signal ${child.signal}, ${elapsedMs} ms\nstdout:\n${child.stdout}\nstderr:\n${child.stderr}`;

      // A signal here is the crash this test exists for (SIGSEGV/SIGABRT), or a hang (SIGTERM on timeout).
      expect(child.signal, diagnostics).toBeNull();
      expect(child.status, diagnostics).toBe(0);
      const report = /verified dispatches: (\d+) of (\d+)/.exec(child.stdout);
      expect(report, diagnostics).not.toBeNull();
      const verified = Number(report![1]);
      const dispatched = Number(report![2]);
      expect(verified).toBe(dispatched);
      expect(verified).toBeGreaterThanOrEqual(1000);
    },
    CHILD_TIMEOUT_MS + 10_000,
  );
});
