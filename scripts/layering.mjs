#!/usr/bin/env node
// npm run layering: dependency-cruiser over src with the rules in .dependency-cruiser.cjs.
// Through its API rather than its `depcruise` command, which refuses to start on Node 20 (it
// follows Node's release cycle); the cruise itself runs on 20.
import { cruise, format } from 'dependency-cruiser';
import extractDepcruiseOptions from 'dependency-cruiser/config-utl/extract-depcruise-options';
import extractTSConfig from 'dependency-cruiser/config-utl/extract-ts-config';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
process.chdir(repoRoot);
const options = await extractDepcruiseOptions('./.dependency-cruiser.cjs');
const tsConfig = await extractTSConfig('./tsconfig.json');
const targets = process.argv.slice(2);
const result = await cruise(targets.length ? targets : ['src'], options, undefined, { tsConfig });
const report = await format(result.output, { outputType: 'err' });
process.stdout.write(report.output);
process.exitCode = report.exitCode;
