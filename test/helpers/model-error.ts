// The assertion every bad-input test makes: the call throws a ModelError whose message holds
// each fragment (the file, the node, what would be accepted).
import { expect } from 'vitest';
import { ModelError } from '../../src/graph/errors.ts';

export function expectModelError(fn: () => unknown, ...fragments: (string | RegExp)[]): ModelError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected a ModelError').toBeInstanceOf(ModelError);
  for (const f of fragments) expect((caught as Error).message).toMatch(f);
  return caught as ModelError;
}
