// Learning-rate schedules against their definitions, evaluated by hand at chosen steps.
import { describe, expect, it } from 'vitest';
import { createSchedule, scheduleFromJson, ScheduleError, type ScheduleSpec } from '../src/train/schedules.ts';

const close = (got: number, want: number) =>
  expect(Math.abs(got - want)).toBeLessThanOrEqual(1e-15 * Math.max(1, Math.abs(want)));

describe('learning-rate schedules', () => {
  it('constant', () => {
    const s = createSchedule({ type: 'constant', lr: 0.03 });
    for (const step of [0, 1, 17, 1_000_000]) expect(s.lrAt(step)).toBe(0.03);
  });

  it('step: lr·γ^⌊s/stepSize⌋', () => {
    const s = createSchedule({ type: 'step', lr: 0.1, stepSize: 30, gamma: 0.1 });
    close(s.lrAt(0), 0.1);
    close(s.lrAt(29), 0.1);
    close(s.lrAt(30), 0.1 * 0.1);
    close(s.lrAt(59), 0.1 * 0.1);
    close(s.lrAt(60), 0.1 * 0.1 * 0.1);
    close(s.lrAt(95), 0.1 * 0.1 ** 3);
  });

  it('multistep: one factor of γ per milestone passed', () => {
    const s = createSchedule({ type: 'multistep', lr: 0.2, milestones: [10, 25], gamma: 0.5 });
    close(s.lrAt(9), 0.2);
    close(s.lrAt(10), 0.1);
    close(s.lrAt(24), 0.1);
    close(s.lrAt(25), 0.05);
    close(s.lrAt(1000), 0.05);
  });

  it('cosine: from lr to minLr over totalSteps, then minLr', () => {
    const [lr, minLr, T] = [0.1, 0.001, 120];
    const s = createSchedule({ type: 'cosine', lr, minLr, totalSteps: T });
    close(s.lrAt(0), lr);
    close(s.lrAt(T / 2), (lr + minLr) / 2); // cos(π/2) = 0
    close(s.lrAt(T / 3), minLr + (lr - minLr) * 0.75); // (1 + cos(π/3))/2 = 3/4
    close(s.lrAt((2 * T) / 3), minLr + (lr - minLr) * 0.25); // (1 + cos(2π/3))/2 = 1/4
    close(s.lrAt(T), minLr);
    close(s.lrAt(T + 50), minLr);
    const plain = createSchedule({ type: 'cosine', lr: 1, totalSteps: 4 });
    close(plain.lrAt(1), (1 + Math.SQRT1_2) / 2); // cos(π/4) = √½
    close(plain.lrAt(4), 0);
  });

  it('linear warm-up, then the main schedule counted from the end of the warm-up', () => {
    // Warm-up over 10 steps from 0.2·lr: factor 0.2 + 0.8·s/10.
    const spec: ScheduleSpec = {
      type: 'cosine',
      lr: 0.4,
      minLr: 0,
      totalSteps: 100,
      warmup: { steps: 10, startFactor: 0.2 },
    };
    const s = createSchedule(spec);
    close(s.lrAt(0), 0.4 * 0.2);
    close(s.lrAt(5), 0.4 * (0.2 + 0.8 * 0.5));
    close(s.lrAt(9), 0.4 * (0.2 + 0.8 * 0.9));
    close(s.lrAt(10), 0.4); // the cosine's step 0
    close(s.lrAt(60), 0.4 / 2); // the cosine's step 50 of 100
    close(s.lrAt(110), 0);

    const stepped = createSchedule({ type: 'step', lr: 1, stepSize: 5, gamma: 0.5, warmup: { steps: 4 } });
    close(stepped.lrAt(0), 0.1); // default startFactor 0.1
    close(stepped.lrAt(2), 0.1 + 0.9 * 0.5);
    close(stepped.lrAt(4), 1);
    close(stepped.lrAt(8), 1);
    close(stepped.lrAt(9), 0.5);

    const constant = createSchedule({ type: 'constant', lr: 0.01, warmup: { steps: 3, startFactor: 0 } });
    [0, 0.01 / 3, (0.01 * 2) / 3, 0.01, 0.01].forEach((want, step) => close(constant.lrAt(step), want));

    const none = createSchedule({ type: 'constant', lr: 0.5, warmup: { steps: 0 } });
    expect(none.lrAt(0)).toBe(0.5);
  });

  it('round-trips through JSON (what a checkpoint stores)', () => {
    const s = createSchedule({
      type: 'multistep',
      lr: 0.1,
      milestones: [3, 7],
      gamma: 0.1,
      warmup: { steps: 2, startFactor: 0.5 },
    });
    const back = scheduleFromJson(JSON.parse(JSON.stringify(s)));
    for (let step = 0; step < 12; step++) expect(back.lrAt(step)).toBe(s.lrAt(step));
    expect(back.spec).toEqual(s.spec);
  });

  it('refuses bad specs and steps with messages naming the field', () => {
    expect(() => createSchedule({ type: 'poly' } as unknown as ScheduleSpec)).toThrow(/unknown schedule type 'poly'/);
    expect(() => createSchedule({ type: 'step', lr: 0.1, stepSize: 0, gamma: 0.1 })).toThrow(
      /stepSize must be a positive integer/,
    );
    expect(() => createSchedule({ type: 'cosine', lr: 0.1, totalSteps: 10, minLr: 0.2 })).toThrow(
      /minLr must be in \[0, lr = 0.1\]/,
    );
    expect(() => createSchedule({ type: 'multistep', lr: 0.1, milestones: [5, 3], gamma: 0.1 })).toThrow(/ascending/);
    expect(() => createSchedule({ type: 'constant', lr: Number.NaN })).toThrow(/lr must be/);
    expect(() => createSchedule({ type: 'constant', lr: 1, warmup: { steps: 2, startFactor: 2 } })).toThrow(
      /startFactor/,
    );
    expect(() => scheduleFromJson(null)).toThrow(ScheduleError);
    const s = createSchedule({ type: 'constant', lr: 1 });
    expect(() => s.lrAt(-1)).toThrow(/step must be an integer ≥ 0/);
    expect(() => s.lrAt(1.5)).toThrow(ScheduleError);
  });
});
