import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as protocol from '../../src/protocol.js';

describe('the shared vocabulary', () => {
  it('gives the dashboard the copy npm run build emits from src/protocol.ts', () => {
    const out = mkdtempSync(join(tmpdir(), 'protocol-'));
    try {
      execFileSync(join('node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.protocol.json', '--outDir', out], { stdio: 'pipe' });
      for (const file of ['protocol.js', 'protocol.d.ts']) {
        expect(readFileSync(join('web', file), 'utf8'), `web/${file} is stale: run npm run build`).toBe(readFileSync(join(out, file), 'utf8'));
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it('is the very module the page loads', async () => {
    const page = (await import('../../web/protocol.js')) as Record<string, unknown>;
    expect(Object.keys(page).sort()).toEqual(Object.keys(protocol).sort());
    expect(String(page.DEVICE_ID)).toBe(String(protocol.DEVICE_ID));
    expect(page.SSE_EVENTS).toEqual(protocol.SSE_EVENTS);
  });

  it('states each rule once: the text names the pattern it describes', () => {
    expect(protocol.DEVICE_ID.source).toBe(`^${protocol.DEVICE_ID_RULE}$`);
    expect(protocol.COMMAND_NAME.test('reboot')).toBe(true);
    expect(protocol.COMMAND_NAME.test('1reboot')).toBe(false);
    expect(protocol.COMMAND_NAME.test('re.boot')).toBe(false);
  });
});
