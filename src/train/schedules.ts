// Learning-rate schedules: pure functions of the optimizer step (0 = the first update), so a
// schedule's whole state is its spec, and resuming from a checkpoint needs only the step count.
//
// A warm-up runs first when given and the main schedule starts when it ends (PyTorch's
// SequentialLR): stepSize, milestones and totalSteps count from the end of the warm-up.

export interface WarmupSpec {
  /** Steps of linear warm-up; lrAt(steps) is the main schedule's first rate. */
  steps: number;
  /** The first step's fraction of the main schedule's first rate (default 0.1); rises linearly to 1. */
  startFactor?: number;
}

export type ScheduleSpec = (
  | { type: 'constant'; lr: number }
  /** lr · gamma^⌊step / stepSize⌋ (PyTorch StepLR). */
  | { type: 'step'; lr: number; stepSize: number; gamma: number }
  /** lr · gamma^(milestones passed), milestones ascending (PyTorch MultiStepLR). */
  | { type: 'multistep'; lr: number; milestones: number[]; gamma: number }
  /** minLr + (lr − minLr)·(1 + cos(π·step/totalSteps))/2, then minLr (PyTorch CosineAnnealingLR, one half period). */
  | { type: 'cosine'; lr: number; totalSteps: number; minLr?: number }
) & { warmup?: WarmupSpec };

export interface Schedule {
  readonly spec: ScheduleSpec;
  /** The learning rate of the update at `step` (0-based). */
  lrAt(step: number): number;
  /** What a checkpoint stores: the spec, as plain JSON. */
  toJSON(): ScheduleSpec;
}

export class ScheduleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScheduleError';
  }
}

export function createSchedule(spec: ScheduleSpec): Schedule {
  const checked = checkSpec(spec);
  const main = mainSchedule(checked);
  const warmup = checked.warmup;
  const lrAt = (step: number): number => {
    if (!Number.isInteger(step) || step < 0) throw new ScheduleError(`lrAt: step must be an integer ≥ 0, got ${step}`);
    if (!warmup || warmup.steps === 0) return main(step);
    if (step >= warmup.steps) return main(step - warmup.steps);
    const start = warmup.startFactor ?? 0.1;
    return main(0) * (start + ((1 - start) * step) / warmup.steps);
  };
  return { spec: checked, lrAt, toJSON: () => structuredClone(checked) };
}

/** A schedule from JSON of unknown origin (a checkpoint, a config file): every field is checked. */
export function scheduleFromJson(json: unknown): Schedule {
  if (typeof json !== 'object' || json === null)
    throw new ScheduleError(`a schedule must be an object, got ${JSON.stringify(json)}`);
  return createSchedule(json as ScheduleSpec);
}

function mainSchedule(spec: ScheduleSpec): (step: number) => number {
  switch (spec.type) {
    case 'constant':
      return () => spec.lr;
    case 'step':
      return (s) => spec.lr * spec.gamma ** Math.floor(s / spec.stepSize);
    case 'multistep':
      return (s) => spec.lr * spec.gamma ** spec.milestones.filter((m) => m <= s).length;
    case 'cosine': {
      const minLr = spec.minLr ?? 0;
      return (s) =>
        minLr + ((spec.lr - minLr) * (1 + Math.cos((Math.PI * Math.min(s, spec.totalSteps)) / spec.totalSteps))) / 2;
    }
  }
}

function checkSpec(spec: ScheduleSpec): ScheduleSpec {
  const type = (spec as { type?: unknown }).type;
  const need = (ok: boolean, what: string) => {
    if (!ok) throw new ScheduleError(`${String(type)} schedule: ${what}`);
  };
  const positiveInt = (x: unknown) => Number.isInteger(x) && (x as number) > 0;
  const rate = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && x >= 0;
  if (type !== 'constant' && type !== 'step' && type !== 'multistep' && type !== 'cosine') {
    throw new ScheduleError(`unknown schedule type '${String(type)}': use 'constant', 'step', 'multistep' or 'cosine'`);
  }
  need(rate(spec.lr), `lr must be a finite number ≥ 0, got ${spec.lr}`);
  if (spec.type === 'step') {
    need(positiveInt(spec.stepSize), `stepSize must be a positive integer, got ${spec.stepSize}`);
    need(rate(spec.gamma), `gamma must be a finite number ≥ 0, got ${spec.gamma}`);
  } else if (spec.type === 'multistep') {
    need(
      Array.isArray(spec.milestones) && spec.milestones.every(positiveInt),
      `milestones must be positive integers, got ${JSON.stringify(spec.milestones)}`,
    );
    need(
      spec.milestones.every((m, i) => i === 0 || m > spec.milestones[i - 1]),
      `milestones must be ascending, got ${JSON.stringify(spec.milestones)}`,
    );
    need(rate(spec.gamma), `gamma must be a finite number ≥ 0, got ${spec.gamma}`);
  } else if (spec.type === 'cosine') {
    need(positiveInt(spec.totalSteps), `totalSteps must be a positive integer, got ${spec.totalSteps}`);
    need(
      spec.minLr === undefined || (rate(spec.minLr) && spec.minLr <= spec.lr),
      `minLr must be in [0, lr = ${spec.lr}], got ${spec.minLr}`,
    );
  }
  if (spec.warmup !== undefined) {
    const w = spec.warmup;
    need(Number.isInteger(w?.steps) && w.steps >= 0, `warmup.steps must be an integer ≥ 0, got ${w?.steps}`);
    need(
      w.startFactor === undefined || (rate(w.startFactor) && w.startFactor <= 1),
      `warmup.startFactor must be in [0, 1], got ${w.startFactor}`,
    );
  }
  return spec;
}
