import type { BuildOptions } from 'esbuild';
export declare function bundleForBrowser(entry: string, options?: BuildOptions): Promise<Uint8Array>;
