// Command-line arguments through node:util's parseArgs (strict: an unknown option, a missing
// value or a value given to a boolean flag is an error), reworded as one line that names the
// argument and what is accepted, plus the usage line.
import { parseArgs as parseNodeArgs } from 'node:util';

export interface CommandSpec {
  name: string;
  usage: string;
  summary: string;
  /** More text for `graft NAME --help` (options, what each does). */
  details?: string;
  run(argv: string[]): number | Promise<number>;
}

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** One option as node:util's parseArgs declares it: `--name value` (string) or `--name` (boolean). */
export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
}

export type OptionSpecs = Record<string, OptionSpec>;

/** Each option's value, typed by its spec; absent options are undefined (defaults live with the command). */
export type OptionValues<O extends OptionSpecs> = {
  [K in keyof O]?: O[K]['type'] extends 'boolean' ? boolean : string;
};

export interface ParsedArgs<O extends OptionSpecs> {
  values: OptionValues<O>;
  positional: string[];
}

export interface ArgsSpec<O extends OptionSpecs> {
  options: O;
  /** How many positional arguments: exactly n, or [min, max]. */
  positional: number | [number, number];
  usage: string;
}

/** Options that take a value (`--out FILE`, `--out=FILE`), declared by name. */
export function valueOptions<const K extends string>(...names: K[]): Record<K, { type: 'string' }> {
  return Object.fromEntries(names.map((n) => [n, { type: 'string' }])) as Record<K, { type: 'string' }>;
}

/** Boolean flags (`--json`), declared by name. */
export function flagOptions<const K extends string>(...names: K[]): Record<K, { type: 'boolean' }> {
  return Object.fromEntries(names.map((n) => [n, { type: 'boolean' }])) as Record<K, { type: 'boolean' }>;
}

export function parseCommandArgs<const O extends OptionSpecs>(argv: string[], spec: ArgsSpec<O>): ParsedArgs<O> {
  const fail = (message: string): never => {
    throw new UsageError(`${message}\nusage: ${spec.usage}`);
  };
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    const args = joinNegativeNumbers(argv, spec.options);
    parsed = parseNodeArgs({ args, options: spec.options, strict: true, allowPositionals: true });
  } catch (e) {
    return fail(describeParseError(e, argv, spec.options));
  }
  const positional = parsed.positionals;
  const [min, max] = Array.isArray(spec.positional) ? spec.positional : [spec.positional, spec.positional];
  if (positional.length < min || positional.length > max) {
    const expected = min === max ? `${min}` : max === Infinity ? `at least ${min}` : `${min}–${max}`;
    const extra =
      positional.length > max
        ? ` (${positional
            .slice(max)
            .map((p) => `'${p}'`)
            .join(', ')} too many)`
        : '';
    fail(`expected ${expected} argument(s), got ${positional.length}${extra}`);
  }
  return { values: parsed.values as OptionValues<O>, positional };
}

/**
 * `--seed -5` → `--seed=-5`: node:util refuses a value that starts with '-' as ambiguous, but a
 * negative number after an option that takes a value can only be that value.
 */
function joinNegativeNumbers(argv: string[], options: OptionSpecs): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].startsWith('--') ? argv[i].slice(2) : undefined;
    if (name && options[name]?.type === 'string' && /^-\d/.test(argv[i + 1] ?? '')) out.push(`${argv[i]}=${argv[++i]}`);
    else out.push(argv[i]);
  }
  return out;
}

// node:util's messages ("Unknown option '--x'. To specify a positional argument …") are written
// for programmers; a user gets the option, what went wrong and what would be accepted.
function describeParseError(e: unknown, argv: string[], options: OptionSpecs): string {
  const code = (e as NodeJS.ErrnoException).code;
  const message = e instanceof Error ? e.message : String(e);
  const option = /'(-{1,2}[^', ]+)/.exec(message)?.[1] ?? '';
  const accepted = Object.entries(options)
    .map(([name, o]) => `--${name}${o.type === 'string' ? ' VALUE' : ''}`)
    .join(', ');
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION')
    return `unknown option ${option}; accepted: ${accepted || 'none'} (and --help)`;
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    if (/does not take an argument/.test(message)) {
      const given = argv.find((a) => a.startsWith(`${option}=`)) ?? `${option}=…`;
      return `${option} is a flag and takes no value, got '${given}'`;
    }
    if (/argument missing/.test(message)) return `${option} needs a value`;
    if (/ambiguous/.test(message)) {
      const at = argv.indexOf(option);
      return `${option} needs a value, got the option-like '${argv[at + 1]}'; a value starting with '-' is written ${option}=${argv[at + 1]}`;
    }
  }
  return message.split('\n')[0];
}
