/**
 * Issue 10, defect 1: five `localvm create race` processes at once (the built CLI, real
 * QEMU, a LOCALVM_HOME of the test's own) must agree on one VM. Before the fix a racer
 * took a VM directory whose creator had not written vm.json yet for `create-failed`,
 * deleted it once the creator was done and made its own: two QEMUs in one round, and the
 * first creator failed with "stopped while waiting for it to be ready (create-failed)".
 * Each round counts every QEMU daemon of this home that appears in /proc while the five run.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, repo } from '../fixtures/build.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';
import { qemuProcessesOf } from '../fixtures/qemuProcs.js';

const skip = await missingQemuOrTiny();
const cli = join(repo, 'dist/cli/main.js');
/**
 * Rounds (RACE_ROUNDS overrides): 10 took 64 s on the shared 2-core TCG host at load 8-12.
 * Before the fix a round went wrong in 2 of 10 (the issue) and here in round 2 of 10.
 */
const ROUNDS = Number(process.env.RACE_ROUNDS ?? 10);
const RACERS = 5;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

describe.skipIf(skip)('concurrent creates of one VM (built CLI, real QEMU)', () => {
  const home = mkdtempSync(join(tmpdir(), 'lvm-race-'));
  const env = { ...process.env, LOCALVM_HOME: join(home, 'state'), LOCALVM_RUN_DIR: join(home, 'run') };
  const localvm = (...args: string[]) =>
    new Promise<Run>((resolve) => {
      execFile(process.execPath, [cli, ...args], { env, timeout: 240_000 }, (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      });
    });

  beforeAll(() => ensureBuilt('dist/cli/main.js'), 300_000);
  afterAll(async () => {
    await localvm('delete', 'race');
    rmSync(home, { recursive: true, force: true });
  });

  it(
    `${RACERS} processes × ${ROUNDS} rounds: one QEMU per round, every process exits 0`,
    async () => {
      const report: string[] = [];
      for (let round = 1; round <= ROUNDS; round++) {
        const seen = new Map<string, number>();
        let sampling = true;
        const sampler = (async () => {
          while (sampling) {
            for (const p of await qemuProcessesOf(home, 'race'))
              if (p.daemon) seen.set(`${p.pid}:${p.startTime}`, p.pid);
            await new Promise((r) => setTimeout(r, 20));
          }
        })();
        // The first round is the command as is; the others skip the readiness wait,
        // which the race does not depend on (the decisions are all taken before it), so
        // more rounds fit in the time.
        const args = round === 1 ? ['create', 'race', '--json'] : ['create', 'race', '--no-wait', '--json'];
        const runs = await Promise.all(Array.from({ length: RACERS }, () => localvm(...args)));
        sampling = false;
        await sampler;
        for (const p of await qemuProcessesOf(home, 'race')) if (p.daemon) seen.set(`${p.pid}:${p.startTime}`, p.pid);

        const failed = runs.filter((r) => r.code !== 0);
        const results = runs
          .filter((r) => r.code === 0)
          .map((r) => JSON.parse(r.stdout) as { vm: { pid: number; state: string }; adopted: boolean });
        report.push(
          `round ${round}: ${seen.size} QEMU, ${failed.length} failed, ${results.filter((r) => !r.adopted).length} created`,
        );
        expect(
          failed.map((r) => r.stderr),
          report.join('\n'),
        ).toEqual([]);
        expect([...seen.values()], report.join('\n')).toHaveLength(1);
        expect(new Set(results.map((r) => r.vm.pid))).toEqual(new Set(seen.values()));
        expect(results.every((r) => r.vm.state === 'running')).toBe(true);
        expect(results.filter((r) => !r.adopted)).toHaveLength(1);

        expect((await localvm('delete', 'race')).code).toBe(0);
        expect(await qemuProcessesOf(home, 'race')).toEqual([]);
      }
      console.log(report.join('\n'));
    },
    ROUNDS * 60_000,
  );
});
