// Starts an image loader worker from the TypeScript sources: Node 20 does not run a worker's
// entry through `--import tsx`, and tsx's default loader registers itself on the main thread
// only, so register it here (tsx is a dependency), then load the worker.
import { register } from 'tsx/esm/api';

register();
await import('./image-worker.ts');
