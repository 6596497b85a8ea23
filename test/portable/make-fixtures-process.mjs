// Shared by scripts/test-deno.mjs and scripts/test-browser.mjs: the portable cases' fixtures, made
// in Node by test/portable/make-fixtures.ts (through tsx) into a fresh temporary folder, or the
// folder given with --fixtures <dir> (made before, kept: how test/portable.test.ts shares one).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * The script's arguments: `[--fixtures <dir>] [group …]`. Without --fixtures, makes them into a
 * new temporary folder (`owned`: the caller removes it). Throws with the maker's output.
 */
export function fixturesFromArgs(args, prefix) {
  const at = args.indexOf('--fixtures');
  if (at >= 0) {
    const dir = args[at + 1];
    if (!dir || !fs.existsSync(path.join(dir, 'manifest.json')))
      throw new Error(
        `--fixtures ${dir ?? '(missing)'}: no manifest.json there; accepted: a folder make-fixtures.ts wrote`,
      );
    return { dir: path.resolve(dir), owned: false, groups: args.filter((_, i) => i !== at && i !== at + 1) };
  }
  return { dir: makeFixtures(prefix), owned: true, groups: args };
}

function makeFixtures(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const maker = path.join(REPO_ROOT, 'test/portable/make-fixtures.ts');
  const child = spawnSync(process.execPath, ['--import', 'tsx', maker, dir], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (child.status !== 0) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`making the fixtures failed (exit ${child.status}):\n${child.stdout}${child.stderr}`);
  }
  process.stdout.write(child.stdout);
  return dir;
}
