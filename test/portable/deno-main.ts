// The portable cases under Deno (WebGPU on wgpu): deno run --unstable-webgpu
// --allow-read=<fixtures> test/portable/deno-main.ts <fixtures> [group …]. Prints each case,
// then `N passed, M failed`; exits 1 on any failure.
import { runPortableCases } from './cases.ts';

declare const Deno: {
  args: string[];
  readFile(path: string): Promise<Uint8Array>;
  exit(code: number): never;
};

const [dir, ...groups] = Deno.args;
if (!dir) {
  console.error('usage: deno-main.ts <fixtures folder> [group …]');
  Deno.exit(2);
}
const started = performance.now();
const result = await runPortableCases({
  runtime: 'deno/wgpu',
  read: (file) => Deno.readFile(`${dir}/${file}`),
  log: (line) => console.log(line),
  groups: groups.length ? groups : undefined,
});
console.log(`cases ran in ${((performance.now() - started) / 1000).toFixed(1)} s`);
console.log(`deno/wgpu (${result.adapter}): ${result.passed} passed, ${result.failed} failed`);
Deno.exit(result.failed > 0 || result.passed === 0 ? 1 : 0);
