// The one way the project writes a file: checked folder, a temporary file beside the target,
// fsync, rename. Whatever stops the process, the target holds the old complete file or the new
// one; temporaries are removed on error, on exit and on SIGINT/SIGTERM, and stale ones (left by a
// killed process) are swept from the folder on the next write there.
import {
  accessSync,
  closeSync,
  constants,
  fsyncSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

export type FileProblem = 'missing' | 'not-a-folder' | 'not-writable' | 'is-a-directory' | 'unreadable' | 'write';

/** A file or folder named by the user that cannot be read or written, with the path. */
export class FileError extends Error {
  constructor(
    readonly problem: FileProblem,
    readonly path: string,
    message: string,
  ) {
    super(message);
    this.name = 'FileError';
  }
}

/**
 * `folder` must exist, be a folder and take a new file, checked by creating one (permission
 * bits say nothing for root or read-only mounts). `label` (a flag, say) starts the message.
 */
export function checkWritableFolder(folder: string, label?: string): void {
  const dir = resolve(folder);
  const at = label ? `${label}: ` : '';
  let isDir: boolean;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    throw new FileError('missing', dir, `${at}folder ${dir} does not exist; create it first`);
  }
  if (!isDir) throw new FileError('not-a-folder', dir, `${at}${dir} is not a folder`);
  const probe = join(dir, temporaryName('.graft-write-check'));
  try {
    accessSync(dir, constants.W_OK);
    closeSync(openSync(probe, 'wx'));
    rmSync(probe, { force: true });
  } catch (e) {
    throw new FileError('not-writable', dir, `${at}folder ${dir} is not writable (${errorCode(e)})`);
  }
}

/** `path` must be a readable file; `expected` says what it should be ("an .onnx file"). */
export function checkReadableFile(path: string, expected: string, label?: string): void {
  const found = readableFileProblem(path, expected);
  if (found) throw new FileError(found.problem, path, `${label ? `${label}: ` : ''}${path} ${found.detail}`);
}

/** Why `path` is not a readable file, as a predicate ("is a directory, expected …"), or undefined. */
export function readableFileProblem(
  path: string,
  expected: string,
): { problem: FileProblem; detail: string } | undefined {
  let isDir: boolean;
  try {
    isDir = statSync(path).isDirectory();
  } catch {
    return { problem: 'missing', detail: `does not exist; expected ${expected}` };
  }
  if (isDir) return { problem: 'is-a-directory', detail: `is a directory, expected ${expected}` };
  try {
    accessSync(path, constants.R_OK);
  } catch (e) {
    return { problem: 'unreadable', detail: `is not readable (${errorCode(e)}); expected ${expected}` };
  }
  return undefined;
}

/**
 * Writes `bytes` (or the chunks, in order) to `path` atomically. The folder is checked first and
 * stale temporaries of this writer's pattern are swept from it.
 */
export function writeFileAtomic(path: string, bytes: Uint8Array | readonly Uint8Array[]): void {
  const folder = dirname(resolve(path));
  checkWritableFolder(folder);
  sweepStaleTemporaries(folder);
  const tmp = join(folder, temporaryName(basename(path)));
  installCleanup();
  inFlight.add(tmp);
  try {
    const fd = openSync(tmp, 'wx');
    try {
      for (const chunk of bytes instanceof Uint8Array ? [bytes] : bytes) {
        for (let done = 0; done < chunk.length;) done += writeSync(fd, chunk, done, chunk.length - done);
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    syncFolder(folder);
  } catch (e) {
    rmSync(tmp, { force: true });
    if (e instanceof FileError) throw e;
    throw new FileError('write', path, `could not write ${path} (${errorCode(e)})`);
  } finally {
    inFlight.delete(tmp);
  }
}

/** Text as UTF-8, written atomically. */
export function writeTextAtomic(path: string, text: string): void {
  writeFileAtomic(path, new TextEncoder().encode(text));
}

/** The number of atomic writes under way in this process (a signal handler must let them end). */
export function writesInFlight(): number {
  return inFlight.size;
}

/** `.<name>.<pid>.<ms>.tmp`: the one naming pattern of temporaries, so a sweep can find them. */
export const TEMPORARY_PATTERN = /^\.(.+)\.(\d+)\.(\d+)\.tmp$/;

/**
 * Removes from `folder` the temporaries of TEMPORARY_PATTERN that no live writer owns: their
 * process is gone, or they carry this process's id but no write of this process holds them
 * (a predecessor with the same id). A live other process's temporary may be mid-write: kept.
 * Returns the paths removed.
 */
export function sweepStaleTemporaries(folder: string): string[] {
  let names: string[];
  try {
    names = readdirSync(folder);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = TEMPORARY_PATTERN.exec(name);
    if (!m) continue;
    const path = join(folder, name);
    const pid = Number(m[2]);
    const stale = pid === process.pid ? !inFlight.has(path) : !processAlive(pid);
    if (!stale) continue;
    try {
      rmSync(path, { force: true });
      removed.push(path);
    } catch {
      // Another sweeper got there first, or the folder forbids it: not this write's business.
    }
  }
  return removed;
}

const inFlight = new Set<string>();
let sequence = 0;

function temporaryName(name: string): string {
  // The sequence keeps two writes of one file within one millisecond apart.
  return `.${name}.${process.pid}.${Date.now() * 1000 + (sequence++ % 1000)}.tmp`;
}

function removeTemporariesInFlight(): void {
  for (const tmp of inFlight) rmSync(tmp, { force: true });
  inFlight.clear();
}

let cleanupInstalled = false;

/**
 * Temporaries in flight go on exit; SIGINT/SIGTERM end the process as their default would (exit
 * 128 + signal number) once the write under way is done, unless another handler (the CLI's
 * interruptible, say) owns the signal. Writes are synchronous, so a signal is handled after the
 * rename or the removal, never between.
 */
function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.on('exit', removeTemporariesInFlight);
  const onSignal = (signal: NodeJS.Signals) => {
    if (process.listenerCount(signal) > 1) return;
    removeTemporariesInFlight();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function syncFolder(folder: string): void {
  // Makes the rename itself survive a power loss. Some systems (Windows, a few network file
  // systems) cannot fsync a folder; the file is already complete and synced, so failing here is fine.
  let fd: number | undefined;
  try {
    fd = openSync(folder, 'r');
    fsyncSync(fd);
  } catch {
    // see above
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function errorCode(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}
