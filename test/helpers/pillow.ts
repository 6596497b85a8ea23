// Pillow (Debian's python3-pil, the libjpeg-turbo decoder torchvision's loader uses) as an
// independent reference. Missing Python or PIL is a set-up fault: the caller's test fails with
// the install command, it is never skipped.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export const PILLOW_INSTALL = 'sudo apt-get install -y python3-pil (or: sudo bash scripts/setup-system.sh)';

/** A python3 that imports PIL: Debian's own first (pyenv or venv shims may lack python3-pil). */
export function findPillowPython(): { python: string } | { problem: string } {
  const candidates = ['/usr/bin/python3', 'python3'].filter((p) => !p.startsWith('/') || existsSync(p));
  const tried: string[] = [];
  for (const python of candidates) {
    const r = spawnSync(
      python,
      ['-c', 'import PIL.Image, PIL.features; print(PIL.__version__, PIL.features.version("jpg"))'],
      {
        encoding: 'utf8',
      },
    );
    if (r.status === 0) return { python };
    tried.push(`${python}: ${r.error ? r.error.message : (r.stderr || '').trim().split('\n').pop()}`);
  }
  return {
    problem: `no python3 with Pillow (${tried.join('; ') || 'no python3 found'}); install it: ${PILLOW_INSTALL}`,
  };
}

/** Runs a Python script with arguments; throws with its stderr when it fails. */
export function runPython(python: string, script: string, args: string[]): string {
  const r = spawnSync(python, ['-c', script, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`python failed (${r.status}): ${r.stderr || r.error?.message}`);
  return r.stdout;
}
