// Dawn prints two warnings to stderr from C++ whenever an instance first enumerates an adapter that
// reports more dynamic buffers than Dawn tracks (lavapipe reports 1,000,000):
//   Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 ...
//   Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 ...
// No create() option or toggle silences them, and they print synchronously inside
// requestAdapter(). So for that call file descriptor 2 points at an unlinked temporary file,
// and what it caught, less those two lines, goes on to stderr. Node has no dup2(): close(2)
// then open() takes the lowest free number, 2, and /dev/fd/N reopens what fd N refers to.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const DAWN_LIMIT_WARNING =
  /^Warning: maxDynamic(Uniform|Storage)BuffersPerPipelineLayout artificially reduced .*(\n|$)/gm;

const STDERR = 2;
const { O_WRONLY, O_NONBLOCK, O_NOCTTY } = fs.constants;

/** Runs `call` with Dawn's two dynamic-buffer limit warnings kept off stderr; all else it prints passes. */
export function withoutDawnLimitWarnings<T>(call: () => T): T {
  const capture = captureStderr();
  if (!capture) return call();
  try {
    return call();
  } finally {
    const rest = capture.restore().replace(DAWN_LIMIT_WARNING, '');
    if (rest) process.stderr.write(rest);
  }
}

interface StderrCapture {
  /** Points fd 2 back at the original stderr; returns what was written meanwhile. */
  restore(): string;
}

/**
 * fd 2 redirected into a temporary file, or null where that cannot be done safely: stderr a
 * regular file (reopened, it would lose the offset it shares with stdout under `>log 2>&1`), a
 * socket (cannot be reopened), a pipe nobody reads (the reopen would block), or no /dev/fd.
 */
function captureStderr(): StderrCapture | null {
  let original: number;
  try {
    const stat = fs.fstatSync(STDERR);
    if (!stat.isCharacterDevice() && !stat.isFIFO()) return null;
    // Probe without blocking: a pipe with no reader fails here (ENXIO) instead of hanging.
    fs.closeSync(fs.openSync(`/dev/fd/${STDERR}`, O_WRONLY | O_NONBLOCK | O_NOCTTY));
    original = fs.openSync(`/dev/fd/${STDERR}`, O_WRONLY | O_NOCTTY);
  } catch {
    return null;
  }
  const file = path.join(os.tmpdir(), `graft-stderr-${process.pid}-${Date.now()}.txt`);
  let caught: number;
  try {
    caught = fs.openSync(file, 'wx+', 0o600);
    fs.unlinkSync(file);
  } catch {
    fs.closeSync(original);
    return null;
  }
  if (!moveToStderr(`/dev/fd/${caught}`)) {
    // Another thread opened a file between our close and open and holds number 2 now: a race
    // two system calls wide, accepted; stderr is not ours to restore then.
    fs.closeSync(original);
    fs.closeSync(caught);
    return null;
  }
  return {
    restore() {
      moveToStderr(`/dev/fd/${original}`);
      fs.closeSync(original);
      const text = readAll(caught);
      fs.closeSync(caught);
      return text;
    },
  };
}

/** Makes fd 2 refer to `target`; false if another thread's open() took number 2 first. */
function moveToStderr(target: string): boolean {
  fs.closeSync(STDERR);
  const fd = fs.openSync(target, O_WRONLY | O_NOCTTY);
  if (fd === STDERR) return true;
  fs.closeSync(fd);
  return false;
}

function readAll(fd: number): string {
  const size = fs.fstatSync(fd).size;
  const bytes = Buffer.alloc(size);
  let done = 0;
  while (done < size) {
    const n = fs.readSync(fd, bytes, done, size - done, done);
    if (n === 0) break;
    done += n;
  }
  return bytes.subarray(0, done).toString('utf8');
}
