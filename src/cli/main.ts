#!/usr/bin/env node
// The `graft` command. Each subcommand lives in commands/; this file only dispatches and turns
// errors into one clear line and an exit code.
import { ModelError } from '../graph/errors.ts';
import { UsageError, type CommandSpec } from './args.ts';
import { buildCommand } from './commands/build.ts';
import { demoCommand } from './commands/demo.ts';
import { inspectCommand } from './commands/inspect.ts';
import { evalCommand } from './commands/eval.ts';
import { predictCommand } from './commands/predict.ts';
import { rewriteCommand } from './commands/rewrite.ts';
import { trainCommand } from './commands/train.ts';

const COMMANDS: CommandSpec[] = [
  inspectCommand,
  buildCommand,
  rewriteCommand,
  trainCommand,
  evalCommand,
  predictCommand,
  demoCommand,
];

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    const list = COMMANDS.map((c) => `  ${c.usage}\n      ${c.summary}`).join('\n');
    process.stderr.write(`${name && name !== '--help' ? `unknown command '${name}'\n` : ''}usage:\n${list}\n`);
    return name && name !== '--help' ? 2 : 0;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(
      `usage: ${command.usage}\n  ${command.summary}\n${command.details ? `${command.details.replace(/^\n/, '')}\n` : ''}`,
    );
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (e) {
    // One line: what went wrong, naming the file or flag (the usage is one --help away).
    if (e instanceof UsageError) {
      process.stderr.write(`graft ${command.name}: ${e.message.split('\n')[0]} (see graft ${command.name} --help)\n`);
      return 2;
    }
    if (
      e instanceof ModelError ||
      (e instanceof Error && e.name.endsWith('Error') && !(e instanceof TypeError) && !(e instanceof RangeError))
    ) {
      process.stderr.write(`graft ${command.name}: ${e.message.replace(/\s*\n\s*/g, '; ')}\n`);
      return 1;
    }
    throw e;
  }
}

process.exitCode = await main(process.argv.slice(2));
