import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VENDORED } from '../../scripts/vendor-web.mjs';

describe('the page\'s third-party files', () => {
  it('are the pinned package\'s own files, as npm run build copies them into web/vendor/', () => {
    const pinned = JSON.parse(readFileSync('package-lock.json', 'utf8')).packages['node_modules/uplot'].version as string;
    expect(JSON.parse(readFileSync('node_modules/uplot/package.json', 'utf8')).version).toBe(pinned);
    for (const [from, to] of VENDORED as [string, string][]) {
      expect(readFileSync(join('web', 'vendor', to)).equals(readFileSync(join('node_modules', from))), `web/vendor/${to} is stale: run npm run build`).toBe(true);
    }
    // The module names its version: the copy the page loads is the one the lockfile pins.
    expect(readFileSync('web/vendor/uPlot.esm.js', 'utf8')).toContain(`(v${pinned})`);
  });

  it('never add a style element or a style attribute, which the page\'s Content-Security-Policy refuses', () => {
    const code = readFileSync('web/vendor/uPlot.esm.js', 'utf8');
    // Styles set through the CSSOM (el.style.x = …) are allowed; markup and <style> are not.
    expect(code).not.toMatch(/innerHTML|insertAdjacentHTML|setAttribute\(\s*["']style|createElement\(\s*["']style|cssText|insertRule/);
  });
});
