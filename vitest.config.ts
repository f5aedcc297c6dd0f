import { defineConfig } from 'vitest/config';

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
  },
});
