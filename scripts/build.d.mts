// Types of scripts/build.mjs for the tests that import it.
import type { BuildOptions } from 'esbuild';

export const REPO_ROOT: string;
export const DIST: string;
export const BROWSER_BUNDLE: string;
export const BROWSER_BUNDLE_BUDGET_BYTES: number;
export function browserBundleOptions(): BuildOptions;
