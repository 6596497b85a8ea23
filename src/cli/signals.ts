// Ctrl-C and SIGTERM for long commands: the first asks the work to stop at a safe point (the
// trainer finishes its step and saves a checkpoint); a second quits at once, except while a
// file is being written, so nothing half-written or temporary is left behind. Files go through
// node/atomic-write.ts, whose own SIGINT/SIGTERM handler stands aside while this one is installed;
// its exit hook removes any temporary still in flight when this one quits.

export interface Interruptible {
  /** Aborted on the first SIGINT/SIGTERM. */
  readonly signal: AbortSignal;
  /** Runs `write` with a second signal held off until it returns. */
  guard<T>(write: () => T): T;
  /** Says the command stopped before it wrote anything; returns the exit code (130). */
  exitBeforeWork(command: string): number;
  dispose(): void;
}

export function interruptible(): Interruptible {
  const controller = new AbortController();
  let writing = 0;
  let quitWhenWritten = false;
  const onSignal = (name: NodeJS.Signals) => {
    if (!controller.signal.aborted) {
      controller.abort();
      process.stderr.write(
        `\n${name}: stopping after the current step and saving a checkpoint (send it again to quit without one)\n`,
      );
      return;
    }
    if (writing > 0) quitWhenWritten = true;
    else process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    guard(write) {
      writing++;
      try {
        return write();
      } finally {
        writing--;
        if (quitWhenWritten && writing === 0) process.exit(130);
      }
    },
    exitBeforeWork(command) {
      process.stderr.write(`graft ${command}: interrupted before training started; nothing was written\n`);
      return 130;
    },
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
