// Interrupted writes: a child process writes a 32 MB model and an 8 MB checkpoint again and again
// through the atomic writer, and is killed (SIGKILL, SIGINT) at seeded random moments. Each time
// the files must hold a complete generation, the one before the kill or the one being written,
// and once the next child has written, no temporary of the writer's pattern may be left.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  checkReadableFile,
  checkWritableFolder,
  FileError,
  sweepStaleTemporaries,
  TEMPORARY_PATTERN,
  writeFileAtomic,
} from '../src/node/atomic-write.ts';
import { loadCheckpoint } from '../src/node/checkpoint-files.ts';
import { decodeModelFile } from '../src/node/files.ts';
import { generationOf, PAYLOAD_ELEMENTS } from './helpers/atomic-write-payload.ts';
import { mulberry32 } from './helpers/random.ts';

const CHILD = join(import.meta.dirname, 'helpers', 'atomic-writer-child.ts');
const root = mkdtempSync(join(tmpdir(), 'graft-atomic-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

interface ChildRun {
  pid: number;
  /** Generations the child reported complete. */
  wrote: number[];
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Starts the writer child at generation `first`; kills it with `signal` `delayMs` after it is ready. */
function runChild(
  folder: string,
  first: number,
  kill?: { signal: NodeJS.Signals; delayMs: number },
  afterFirstWrite?: (pid: number) => void,
): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', CHILD, folder, String(first), ...(kill ? [] : ['--once'])],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const run: ChildRun = { pid: child.pid!, wrote: [], code: null, signal: null };
    let buffered = '';
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        if (line === 'ready' && kill) setTimeout(() => child.kill(kill.signal), kill.delayMs);
        const m = /^wrote (\d+)$/.exec(line);
        if (m) {
          if (run.wrote.length === 0) afterFirstWrite?.(run.pid);
          run.wrote.push(Number(m[1]));
        }
      }
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ ...run, code, signal }));
  });
}

function temporaries(folder: string): string[] {
  return readdirSync(folder).filter((n) => TEMPORARY_PATTERN.test(n));
}

/** The generation each file holds, decoded and checked element by element (throws if partial). */
function generations(folder: string): { model: number | undefined; checkpoint: number | undefined } {
  const graph = decodeModelFile(join(folder, 'model.onnx'));
  const model = graph.initializers.get('payload')!.value;
  const ck = loadCheckpoint(join(folder, 'state.ckpt')); // verifies the CRC
  const weights = ck.weights.get('ck_payload')!.data;
  const checkpoint = generationOf(weights, PAYLOAD_ELEMENTS / 3);
  return {
    model: model.data instanceof Float32Array ? generationOf(model.data, PAYLOAD_ELEMENTS) : undefined,
    checkpoint: checkpoint === ck.step ? checkpoint : undefined,
  };
}

describe('atomic writer', () => {
  it('leaves the old or the new file, never a partial one, when killed at random moments', async () => {
    const rng = mulberry32(13);
    // Two lanes (folders) run side by side to keep the test short; 26 kills or more each, half SIGINT.
    const lanes = [0, 1].map(async (lane) => {
      const folder = join(root, `lane${lane}`);
      mkdirSync(folder);
      const initial = await runChild(folder, 0);
      expect(initial.wrote).toEqual([0]);
      let held = { model: 0, checkpoint: 0 };
      let next = 1;
      const kills: string[] = [];
      let killedMidWrite = 0;
      // 26 rounds, and more (up to 60) until 3 SIGKILLs of this lane landed inside a write: how
      // many do depends on the machine's load (seeded moments, but timed against real writes).
      for (let round = 0; round < 26 || (killedMidWrite < 3 && round < 60); round++) {
        const signal: NodeJS.Signals = round % 2 === 0 ? 'SIGKILL' : 'SIGINT';
        const delayMs = Math.floor(rng() * 500);
        let leftover: string[] = [];
        const run = await runChild(folder, next, { signal, delayMs }, (pid) => {
          // The child's first write swept what earlier children left: only its own may remain.
          leftover = temporaries(folder).filter((n) => Number(TEMPORARY_PATTERN.exec(n)![2]) !== pid);
        });
        const what = `lane ${lane} round ${round}: ${signal} after ${delayMs} ms, wrote [${run.wrote.join(', ')}]`;
        expect(leftover, what).toEqual([]);
        if (signal === 'SIGINT') {
          // The writer's handler lets the write under way finish, then exits 130 leaving no
          // temporary of its own (a SIGKILLed predecessor's waits for the next write's sweep).
          expect(run.code === 130 || run.signal === 'SIGINT', `${what}: exit ${run.code} ${run.signal}`).toBe(true);
          expect(
            temporaries(folder).filter((n) => Number(TEMPORARY_PATTERN.exec(n)![2]) === run.pid),
            what,
          ).toEqual([]);
        } else {
          expect(run.signal, what).toBe('SIGKILL');
          if (temporaries(folder).length > 0) killedMidWrite++;
        }
        const last = run.wrote.at(-1);
        const found = generations(folder);
        for (const file of ['model', 'checkpoint'] as const) {
          const allowed = last === undefined ? [held[file], next] : [last, last + 1];
          expect(allowed, `${what}: ${file} holds generation ${found[file]}`).toContain(found[file]);
          held[file] = found[file]!;
        }
        next = Math.max(held.model, held.checkpoint) + 1;
        kills.push(signal);
      }
      // A last, uninterrupted write leaves no temporary at all.
      const final = await runChild(folder, next);
      expect(final.wrote).toEqual([next]);
      expect(temporaries(folder)).toEqual([]);
      held = { model: next, checkpoint: next };
      expect(generations(folder)).toEqual(held);
      return { kills, killedMidWrite };
    });
    const results = await Promise.all(lanes);
    const kills = results.flatMap((r) => r.kills);
    // The moments must land inside writes often enough for the test to mean something.
    expect(results.reduce((n, r) => n + r.killedMidWrite, 0)).toBeGreaterThanOrEqual(5);
    expect(kills.filter((k) => k === 'SIGKILL').length).toBeGreaterThanOrEqual(25);
    expect(kills.filter((k) => k === 'SIGINT').length).toBeGreaterThanOrEqual(25);
  }, 240_000);
});

describe('atomic writer checks', () => {
  it('refuses a missing, non-folder or read-only destination before writing, naming the folder', () => {
    const dir = mkdtempSync(join(root, 'checks-'));
    const missing = join(dir, 'nope');
    expectFileError(
      () => writeFileAtomic(join(missing, 'a.onnx'), new Uint8Array(4)),
      'missing',
      `folder ${missing} does not exist; create it first`,
    );
    const file = join(dir, 'plain');
    writeFileSync(file, 'x');
    expectFileError(() => checkWritableFolder(file, '--out'), 'not-a-folder', `--out: ${file} is not a folder`);
    // As root, permission bits do not stop a write: /proc refuses new files for everyone.
    const readOnly = process.getuid?.() === 0 ? '/proc' : join(dir, 'ro');
    if (readOnly !== '/proc') mkdirSync(readOnly, { mode: 0o555 });
    expectFileError(
      () => writeFileAtomic(join(readOnly, 'a'), new Uint8Array(1)),
      'not-writable',
      new RegExp(`^folder ${readOnly} is not writable \\((EACCES|ENOENT|EROFS)\\)$`),
    );
    expect(readdirSync(dir).filter((n) => n !== 'ro')).toEqual(['plain']);
  });

  it('names a directory or a missing file given where a file is expected', () => {
    const dir = mkdtempSync(join(root, 'read-'));
    expectFileError(
      () => checkReadableFile(dir, 'an .onnx file'),
      'is-a-directory',
      `${dir} is a directory, expected an .onnx file`,
    );
    const missing = join(dir, 'm.onnx');
    expectFileError(
      () => checkReadableFile(missing, 'an .onnx file', '--model'),
      'missing',
      `--model: ${missing} does not exist; expected an .onnx file`,
    );
  });

  it('removes its temporary when the write fails, and sweeps stale ones of dead processes only', () => {
    const dir = mkdtempSync(join(root, 'sweep-'));
    // A folder under the target name: the rename fails after the bytes are written.
    mkdirSync(join(dir, 'taken'));
    expectFileError(
      () => writeFileAtomic(join(dir, 'taken'), new Uint8Array(64)),
      'write',
      `could not write ${join(dir, 'taken')} (EISDIR)`,
    );
    expect(temporaries(dir)).toEqual([]);
    const dead = findDeadPid();
    const stale = [`.m.onnx.${dead}.1.tmp`, `.m.onnx.${process.pid}.2.tmp`];
    const alive = `.m.onnx.${process.ppid}.3.tmp`; // a live process (vitest's) may be mid-write
    for (const n of [...stale, alive, 'm.onnx.1.2.tmp', '.m.onnx.tmp']) writeFileSync(join(dir, n), 'partial');
    expect(sweepStaleTemporaries(dir).sort()).toEqual(stale.map((n) => join(dir, n)).sort());
    expect(readdirSync(dir).sort()).toEqual(['.m.onnx.tmp', alive, 'm.onnx.1.2.tmp', 'taken'].sort());
    writeFileAtomic(join(dir, 'm.onnx'), new Uint8Array([1, 2, 3]));
    expect(readdirSync(dir).sort()).toEqual(['.m.onnx.tmp', alive, 'm.onnx', 'm.onnx.1.2.tmp', 'taken'].sort());
  });
});

function expectFileError(f: () => unknown, problem: string, message: string | RegExp): void {
  let error: unknown;
  try {
    f();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(FileError);
  expect((error as FileError).problem).toBe(problem);
  if (typeof message === 'string') expect((error as FileError).message).toBe(message);
  else expect((error as FileError).message).toMatch(message);
}

/** A process id that no process has now (signal 0 says ESRCH). */
function findDeadPid(): number {
  for (let pid = 4_000_000; ; pid--) {
    try {
      process.kill(pid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') return pid;
    }
  }
}
