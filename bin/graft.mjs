#!/usr/bin/env node
// The `graft` command. Installed from the package it runs the compiled CLI (dist/) with plain
// Node; in a checkout (src/ is not shipped) it runs the TypeScript sources through tsx's loader,
// a dev dependency, so the sources never need a build and a stale dist/ is never run.
//
// Quiet by default: Dawn's adapter-limit warnings stay off stderr unless --verbose is given
// (anywhere; it is taken out before the command sees its arguments) or GRAFT_DAWN_WARNINGS=show.
import { existsSync } from 'node:fs';

const args = process.argv.slice(2);
const verbose = args.includes('--verbose');
if (verbose) process.env.GRAFT_DAWN_WARNINGS = 'show';
else if (!process.env.GRAFT_DAWN_WARNINGS?.trim()) process.env.GRAFT_DAWN_WARNINGS = 'hide';
process.argv.splice(2, args.length, ...args.filter((a) => a !== '--verbose'));

const sources = new URL('../src/cli/main.ts', import.meta.url);
if (existsSync(sources)) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(sources.href);
} else {
  await import('../dist/cli/main.js');
}
