// A TuningStore on a JSON file, for Node hosts (the engine itself never touches files).
import fs from 'node:fs';
import path from 'node:path';
import type { TuningStore } from '../src/kernels/autotune.ts';
import { writeTextAtomic } from '../src/node/atomic-write.ts';

export function jsonFileTuningStore(file: string): TuningStore {
  const readAll = (): Record<string, Record<string, string>> => {
    try {
      return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, Record<string, string>>;
    } catch {
      return {};
    }
  };
  return {
    load: (adapter) => readAll()[adapter],
    save: (adapter, choices) => {
      const all = readAll();
      all[adapter] = choices;
      fs.mkdirSync(path.dirname(file), { recursive: true });
      writeTextAtomic(file, JSON.stringify(all, null, 2));
    },
  };
}
