import { defineConfig } from 'vitest/config';

// Three tiers with their own timeouts. Integration and e2e tests boot real VMs under
// software emulation on 2 shared cores, so they run one file at a time and wait longer.
const ci = process.env.CI === 'true';

export default defineConfig({
  test: {
    reporters: ci ? ['verbose'] : ['default'],
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
          globalSetup: ['tests/fixtures/globalSetup.ts'],
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
        },
      },
    ],
  },
});
