// The portable cases in a browser page (bundled by scripts/test-browser.mjs): fixtures are
// fetched from the page's own origin; the result is left on window.portableResult for the
// driver, and every line goes to the console.
import { runPortableCases, type PortableResult } from './cases.ts';

declare global {
  interface Window {
    portableResult?: PortableResult | { error: string };
  }
}

async function read(file: string): Promise<Uint8Array> {
  const response = await fetch(`fixtures/${file}`);
  if (!response.ok) throw new Error(`fixture ${file}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

const runtime = new URLSearchParams(location.search).get('runtime') ?? 'browser';
const groups = new URLSearchParams(location.search).getAll('group');
runPortableCases({ runtime, read, log: (line) => console.log(line), groups: groups.length ? groups : undefined }).then(
  (result) => {
    window.portableResult = result;
  },
  (error: unknown) => {
    window.portableResult = { error: error instanceof Error ? `${error.name}: ${error.message}` : String(error) };
  },
);
