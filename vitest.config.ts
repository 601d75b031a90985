import { resolve } from 'node:path';
import { defineConfig } from 'vitest/config';

// Three tiers with their own timeouts. Integration and e2e tests boot real VMs under
// software emulation on 2 shared cores, so they run one file at a time and wait longer.
const ci = process.env.CI === 'true';
// Real-VM tiers keep their VMs apart from the user's (the global setup uses the same default).
const testHome = process.env.LOCALVM_HOME ?? resolve('.localvm-test/state');

export default defineConfig({
  test: {
    // In CI the JSON report feeds the plain "N passed, N failed" line that .ci/run prints.
    // Failures print as they happen and the run ends with its slowest tests (slowestReporter).
    reporters: ci
      ? ['verbose', 'json', './tests/fixtures/slowestReporter.ts']
      : ['default', './tests/fixtures/slowestReporter.ts'],
    outputFile: ci ? { json: '.localvm-test/vitest-results.json' } : undefined,
    slowTestThreshold: 2_000,
    projects: [
      {
        test: {
          name: 'unit',
          include: ['tests/unit/**/*.test.ts'],
          testTimeout: 10_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['tests/integration/**/*.test.ts'],
          testTimeout: 180_000,
          hookTimeout: 300_000,
          fileParallelism: false,
          // One worker process runs every file, so localvm/vitest's worker VM is booted once
          // and shared by all the files that use it (the same set-up we ask of users).
          pool: 'forks',
          isolate: false,
          globalSetup: ['tests/fixtures/globalSetup.ts'],
          env: { LOCALVM_HOME: testHome },
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['tests/e2e/**/*.test.ts'],
          testTimeout: 300_000,
          hookTimeout: 300_000,
          fileParallelism: false,
          globalSetup: ['tests/fixtures/globalSetup.ts'],
          env: { LOCALVM_HOME: testHome },
        },
      },
    ],
  },
});
