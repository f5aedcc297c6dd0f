import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * Browser files first, compose files last. The compose tests' private dockerd creates bridges and
 * veth interfaces while it works; Chromium sees every address change as a network change and fails
 * navigations and open requests with ERR_NETWORK_CHANGED. With two workers, a file starts only
 * after every file before it has started, so the browser files are long finished when dockerd
 * begins (the rest of the suite takes minutes, they take about one).
 */
class BrowserBeforeDocker extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification) => (f.moduleId.includes('/test/e2e/') ? 0 : /\/compose[^/]*\.test\.ts$/.test(f.moduleId) ? 2 : 1);
    return (await super.sort(files)).map((f, i) => ({ f, i })).sort((a, b) => rank(a.f) - rank(b.f) || a.i - b.i).map(({ f }) => f);
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The run's TLS certificate, trusted by every test process (see the file).
    globalSetup: ['test/helpers/tls-setup.ts'],
    // Integration tests start real brokers and proxies: give them room, and run files one or two at
    // a time so a 2-core machine is not oversubscribed.
    testTimeout: 30_000,
    hookTimeout: 30_000,
    maxWorkers: 2,
    minWorkers: 1,
    pool: 'forks',
    // Leak tests collect garbage before they measure.
    poolOptions: { forks: { execArgv: ['--expose-gc'] } },
    reporters: ['default'],
    sequence: { sequencer: BrowserBeforeDocker },
  },
});
