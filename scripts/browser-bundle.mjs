// One esbuild configuration for the pages served to Chromium (the portable cases, the example
// page, the browser benchmark): an ES2022 module for the browser with every import bundled.
import * as esbuild from 'esbuild';

/** Bundles `entry` for the browser; `options` adds esbuild options (minify, external, …). Resolves with the bytes. */
export async function bundleForBrowser(entry, options = {}) {
  const built = await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    write: false,
    logLevel: 'warning',
    ...options,
  });
  return built.outputFiles[0].contents;
}
