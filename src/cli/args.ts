// A small argument parser: --flag, --option value / --option=value, positionals; unknown
// arguments are errors that show the usage line.

export interface CommandSpec {
  name: string;
  usage: string;
  summary: string;
  /** More text for `graft NAME --help` (options, what each does). */
  details?: string;
  run(argv: string[]): number | Promise<number>;
}

export class UsageError extends Error {}

export interface ParsedArgs {
  flags: Record<string, boolean>;
  options: Record<string, string | undefined>;
  positional: string[];
}

export function parseArgs(
  argv: string[],
  spec: { flags?: string[]; options?: string[]; positional: number | [number, number]; usage: string },
): ParsedArgs {
  const flags: Record<string, boolean> = {};
  const options: Record<string, string | undefined> = {};
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const [key, inline] = a.slice(2).split(/=(.*)/s, 2);
      if (spec.flags?.includes(key) && inline === undefined) flags[key] = true;
      else if (spec.options?.includes(key)) {
        const value = inline ?? argv[++i];
        if (value === undefined) throw new UsageError(`--${key} needs a value\nusage: ${spec.usage}`);
        options[key] = value;
      } else throw new UsageError(`unknown option ${a}\nusage: ${spec.usage}`);
    } else positional.push(a);
  }
  const [min, max] = Array.isArray(spec.positional) ? spec.positional : [spec.positional, spec.positional];
  if (positional.length < min || positional.length > max)
    throw new UsageError(
      `expected ${min === max ? min : `${min}–${max}`} argument(s), got ${positional.length}\nusage: ${spec.usage}`,
    );
  return { flags, options, positional };
}
