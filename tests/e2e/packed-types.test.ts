/**
 * The published declarations type-check for a stranger: `npm pack` the built package,
 * install the tarball into a fresh consumer project (offline, from npm's cache) and run
 * this repo's `tsc` over a tiny consumer with TypeScript 6 defaults (strict, nodenext, no
 * `types` field, so no `@types/*` package is pulled in unless a declaration asks for it).
 * No VM is started.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, repo } from '../fixtures/build.js';

const tsc = join(repo, 'node_modules/.bin/tsc');

// Each entry point is checked as a program of its own, as a consumer that imports only it
// sees it: Pulumi's and vitest's declarations pull in Node's types themselves, which would
// hide a localvm declaration that needs them but does not say so. A value and a few types
// from each, so a broken declaration on the path from them fails the check.
const consumers: Record<string, string> = {
  root: `
import { createVm, loadConfig, LocalVmError, type ExecResult, type VmInfo, type VmSpecInput } from 'localvm';
const spec: VmSpecInput = { name: 'web', memory: 256, labels: { team: 'a' } };
export async function make(): Promise<VmInfo> {
  try {
    return await createVm(spec, { config: loadConfig({ LOCALVM_HOME: '/tmp/x' }) });
  } catch (e) {
    if (e instanceof LocalVmError && e.code === 'VALIDATION') throw new Error(e.message);
    throw e;
  }
}
export const stdoutOf = (r: ExecResult): string => r.stdout;
// @ts-expect-error: a misspelled spec field must still be an error (the types are not any)
export const wrong: VmSpecInput = { name: 'web', memroy: 256 };
`,
  pulumi: `
import { Vm, type VmArgs } from 'localvm/pulumi';
export const args: VmArgs = { image: 'tiny', memory: 256 };
export const build = (): Vm => new Vm('web', args);
`,
  vitest: `
import { createVmFixture, fixtureEnv, vmTest, type VmFixtureOptions } from 'localvm/vitest';
const options: VmFixtureOptions = { spec: { memory: 256 }, reset: false };
export const custom = createVmFixture(options);
export const worker: string = fixtureEnv({ VITEST_POOL_ID: '1' }).worker;
vmTest('runs in the guest', async ({ vm }) => {
  const r = await vm.exec(['uname']);
  if (r.exitCode !== 0) throw new Error(r.stderr);
});
`,
};

describe('packed package types', () => {
  const work = mkdtempSync(join(tmpdir(), 'localvm-packed-types-'));
  const app = join(work, 'app');

  beforeAll(() => ensureBuilt('dist/index.d.ts'), 300_000);
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('type-checks a consumer with TypeScript 6 defaults against the packed tarball', () => {
    const packed = JSON.parse(
      execFileSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: repo, encoding: 'utf8' }),
    ) as { filename: string }[];
    const tarball = join(work, packed[0]!.filename);

    mkdirSync(app);
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({
        name: 'consumer',
        private: true,
        type: 'module',
        // vitest is localvm's optional peer: a consumer of localvm/vitest brings its own.
        dependencies: { localvm: `file:${tarball}`, vitest: '^4' },
      }),
    );
    for (const [entry, source] of Object.entries(consumers)) {
      writeFileSync(join(app, `${entry}.ts`), source);
      writeFileSync(
        join(app, `tsconfig.${entry}.json`),
        JSON.stringify({
          compilerOptions: { strict: true, module: 'nodenext', moduleResolution: 'nodenext', noEmit: true },
          files: [`${entry}.ts`],
        }),
      );
    }
    const install = spawnSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund'], {
      cwd: app,
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(install.status, install.stderr).toBe(0);

    const failures = Object.keys(consumers).flatMap((entry) => {
      const check = spawnSync(tsc, ['-p', `tsconfig.${entry}.json`], { cwd: app, encoding: 'utf8', timeout: 60_000 });
      return check.status === 0 ? [] : [`${entry}: ${check.stdout}${check.stderr}`];
    });
    expect(failures).toEqual([]);
  }, 180_000);
});
