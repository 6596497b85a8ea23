// Quiet by default: Dawn's two "max...BuffersPerPipelineLayout artificially reduced" warnings,
// printed by C++ on file descriptor 2 whenever an instance first enumerates the adapter, do not
// reach users of the graft CLI; --verbose (or GRAFT_DAWN_WARNINGS=show) lets them through.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mulberry32 } from './helpers/random.ts';

const REPO_ROOT = path.resolve(import.meta.dirname, '..');
const WARNING = /^Warning: maxDynamic(Uniform|Storage)BuffersPerPipelineLayout artificially reduced .*$/gm;
const UNIFORM = 'Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit';
const STORAGE = 'Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit';

/**
 * Runs node with `args`, its stderr a pipe as a shell makes it (`2>&1 >file | cat`): returns
 * node's exit status, its stderr as `stderr`, its stdout read back from the file.
 */
function throughShellPipe(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): { status: number | null; stdout: string; stderr: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'graft-quiet-pipe-'));
  try {
    const out = path.join(dir, 'stdout');
    const r = spawnSync(
      'bash',
      // pipefail: the status is node's, not cat's.
      ['-c', 'set -o pipefail; out="$1"; shift; "$@" 2>&1 >"$out" | cat', 'bash', out, process.execPath, ...args],
      {
        cwd: REPO_ROOT,
        encoding: 'utf8',
        env,
      },
    );
    return { status: r.status, stdout: readFileSync(out, 'utf8'), stderr: r.stdout + r.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('withoutDawnLimitWarnings (fd 2 captured around a call, in a child process)', () => {
  // The child writes straight to fd 2, as Dawn's C++ does, inside and outside the call.
  const child = (wrapped: boolean) => [
    '--import',
    'tsx',
    '--input-type=module',
    '-e',
    `import fs from 'node:fs';
    import { withoutDawnLimitWarnings } from ${JSON.stringify(path.join(REPO_ROOT, 'src/node/dawn-warnings.ts'))};
    const print = () => { fs.writeSync(2, ${JSON.stringify(`${UNIFORM}\nkept: another message\n${STORAGE}\n`)}); return 42; };
    process.stderr.write('before\\n');
    const value = ${wrapped ? 'withoutDawnLimitWarnings(print)' : 'print()'};
    process.stderr.write('after\\n');
    fs.writeSync(2, 'fd 2 after\\n');
    console.log(value);`,
  ];
  const LOUD = `before\n${UNIFORM}\nkept: another message\n${STORAGE}\nafter\nfd 2 after\n`;

  it('stderr a pipe: drops exactly the two warnings; other text, the return value and stderr afterwards are kept', () => {
    const quiet = throughShellPipe(child(true));
    expect(quiet.status, quiet.stderr).toBe(0);
    expect(quiet.stdout).toBe('42\n');
    expect(quiet.stderr).toBe('before\nkept: another message\nafter\nfd 2 after\n');
    // Unwrapped, the same child prints them (the check above would see them).
    expect(throughShellPipe(child(false)).stderr).toBe(LOUD);
  }, 60_000);

  it('stderr a socket (what node:child_process gives a child), which cannot be reopened: all passes, in order', () => {
    const r = spawnSync(process.execPath, child(true), { cwd: REPO_ROOT, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('42\n');
    expect(r.stderr).toBe(LOUD);
  }, 60_000);
});

describe('graft on a real device', () => {
  let dir: string;
  let image: string;
  const model = path.join(REPO_ROOT, 'models-onnx/source/source-net.onnx');
  const env = (extra: Record<string, string>) => {
    const { GRAFT_DAWN_WARNINGS: _, ...rest } = process.env;
    return { ...rest, ...extra };
  };
  const graft = (args: string[], extra: Record<string, string> = {}) =>
    throughShellPipe([path.join(REPO_ROOT, 'bin/graft.mjs'), ...args], env(extra));

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'graft-quiet-'));
    image = path.join(dir, 'noise.png');
    const rng = mulberry32(11);
    const pixels = Buffer.from(Array.from({ length: 40 * 40 * 3 }, () => Math.floor(rng() * 256)));
    writeFileSync(
      image,
      await sharp(pixels, { raw: { width: 40, height: 40, channels: 3 } })
        .png()
        .toBuffer(),
    );
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('`graft predict` (creates a device) prints nothing on stderr by default, into a pipe or a terminal', () => {
    const quiet = graft(['predict', model, image]);
    expect(quiet.status, quiet.stderr).toBe(0);
    expect(quiet.stdout).toMatch(/^ {2}1\. /m);
    expect(quiet.stderr).toBe('');
    // A terminal: script(1) runs the command on a pseudo-terminal and copies what it shows.
    const shown = spawnSync(
      'script',
      ['-qec', `${process.execPath} bin/graft.mjs predict ${model} ${image}`, '/dev/null'],
      { cwd: REPO_ROOT, encoding: 'utf8', env: env({}) },
    );
    expect(shown.status, shown.stdout).toBe(0);
    expect(shown.stdout).toMatch(/^ {2}1\. /m);
    expect(shown.stdout).not.toMatch(/artificially reduced/);
  }, 120_000);

  it('GRAFT_DAWN_WARNINGS other than show or hide: one line naming it and what is accepted, exit 1', () => {
    const bad = graft(['predict', model, image], { GRAFT_DAWN_WARNINGS: 'loud' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toBe(
      "graft predict: create GPU context: GRAFT_DAWN_WARNINGS is 'loud'; accepted: 'show' or 'hide'\n",
    );
  }, 60_000);

  it('--verbose lets Dawn speak: on lavapipe (which reports 1,000,000 dynamic buffers) both warnings', () => {
    // GRAFT_ADAPTER picks lavapipe; where there is none the command says so and shows nothing else.
    const verbose = graft(['predict', model, image, '--verbose'], { GRAFT_ADAPTER: 'llvmpipe' });
    if (verbose.status !== 0) {
      expect(verbose.stderr).toMatch(/no adapter matches 'llvmpipe'/);
      return;
    }
    expect(verbose.stderr.match(WARNING)).toEqual([expect.stringContaining(UNIFORM), expect.stringContaining(STORAGE)]);
    expect(verbose.stderr.replace(WARNING, '').trim()).toBe('');
    expect(verbose.stdout).toBe(graft(['predict', model, image]).stdout);
  }, 120_000);
});
