// Debian's chromium with WebGPU on its SwiftShader, as docs/platform.md found it working here;
// playwright-core gives the browser a fresh profile folder of its own (it refuses --user-data-dir).
// Shared by scripts/test-browser.mjs and test/example-page.test.ts.
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.GRAFT_CHROMIUM ?? '/usr/bin/chromium';

/** Launches headless chromium with WebGPU enabled. */
export function launchWebGpuChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless=new',
      '--no-sandbox',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--enable-unsafe-webgpu',
      '--enable-features=Vulkan',
      '--use-angle=vulkan',
    ],
  });
}
