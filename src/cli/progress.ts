// Training progress for `graft train`: on a terminal one bar per epoch redrawn in place (step,
// loss, accuracy, images/s, time left); elsewhere (a log file, CI) one line per finished epoch.
import type { EpochMetrics, StepInfo } from '../train/trainer.ts';
import { percent } from './common.ts';

export interface ProgressOutput {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export class Progress {
  #lastDraw = 0;
  #drawn = false;

  constructor(
    readonly out: ProgressOutput,
    readonly epochs: number,
  ) {}

  get interactive(): boolean {
    return Boolean(this.out.isTTY);
  }

  step(s: StepInfo): void {
    if (!this.interactive) return;
    const now = Date.now();
    // Redraw at most 10 times a second, and always on an epoch's last step.
    if (now - this.#lastDraw < 100 && s.stepInEpoch !== s.stepsInEpoch) return;
    this.#lastDraw = now;
    const width = 20;
    const total = s.stepsInEpoch;
    const filled = total ? Math.round((width * Math.min(s.stepInEpoch, total)) / total) : 0;
    const bar = total
      ? `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${s.stepInEpoch}/${total}`
      : `step ${s.stepInEpoch}`;
    const left = total ? ` ${formatSeconds(((total - s.stepInEpoch) * s.epochSeconds) / s.stepInEpoch)} left` : '';
    const text = `epoch ${s.epoch + 1}/${this.epochs} ${bar} loss ${s.epochLoss.toFixed(4)} acc ${percent(s.epochTop1)} ${s.imagesPerSecond.toFixed(1)} img/s${left}`;
    const cols = this.out.columns ?? 120;
    this.out.write(`\r${text.slice(0, cols - 1).padEnd(Math.min(cols - 1, this.#drawn ? cols - 1 : text.length))}`);
    this.#drawn = true;
  }

  epoch(m: EpochMetrics): void {
    if (this.#drawn) this.out.write('\r\x1b[2K');
    this.#drawn = false;
    this.out.write(epochLine(m, this.epochs) + '\n');
  }

  /** Clears a half-drawn bar before other output (a warning); the next step redraws it. */
  clear(): void {
    if (this.#drawn) this.out.write('\r\x1b[2K');
    this.#drawn = false;
  }

  /** Ends a bar left half-drawn (an interrupt). */
  finish(): void {
    if (this.#drawn) this.out.write('\n');
    this.#drawn = false;
  }
}

export function epochLine(m: EpochMetrics, epochs: number): string {
  const val = m.valLoss !== undefined ? `  val loss ${m.valLoss.toFixed(4)} acc ${percent(m.valTop1!)}` : '';
  const time =
    `  ${m.trainSeconds.toFixed(1)} s training` +
    (m.valLoss !== undefined ? ` + ${m.valSeconds.toFixed(1)} s validation` : '');
  return `epoch ${m.epoch}/${epochs}  loss ${m.loss.toFixed(4)} acc ${percent(m.top1)}${val}  ${(m.samples / Math.max(1e-3, m.trainSeconds)).toFixed(1)} img/s${time}`;
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s - 60 * m)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}
