/**
 * What a dry run prints is what the run does: for creates of several kinds of spec, and for
 * start and stop, the plan from Backend.plan() (no lock, no KVM probe, nothing written) is
 * compared with the steps the real operation then executed, and the planned QEMU argv with
 * the running process's /proc/PID/cmdline.
 */
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createQemuBackend, type QemuBackend } from '../../src/backends/qemu/index.js';
import type { QemuStep } from '../../src/backends/qemu/plan.js';
import { loadConfig, type LocalVmConfig } from '../../src/config.js';
import { planCommands, type Plan } from '../../src/plan.js';
import { createExecaRunner } from '../../src/runner.js';
import { parseVmSpec, type VmSpecInput } from '../../src/schema.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const skip = (await missingQemuOrTiny()) !== undefined;
const prefix = loadConfig().testPrefix;
const runner = createExecaRunner();
let root: string;
let config: LocalVmConfig;
let backend: QemuBackend;
const executed: QemuStep[] = [];

function cmdline(pid: number | undefined): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
}

/** The planned argv of the QEMU launch (its last process), with the binary as QEMU's own argv[0] shows it. */
function launchArgv(plan: Plan): string[] {
  const launch = planCommands(plan).at(-1);
  return launch ? [launch.file, ...launch.args] : [];
}

async function createAndCompare(input: VmSpecInput): Promise<void> {
  const spec = parseVmSpec({ memory: 128, ...input });
  const before = existsSync(join(config.stateDir, 'vms', spec.name));
  const plan = await backend.plan({ operation: 'create', spec });
  // Planning wrote nothing.
  expect(existsSync(join(config.stateDir, 'vms', spec.name))).toBe(before);
  executed.length = 0;
  const info = await backend.create(spec);
  expect(executed.map((s) => s.summary.replace(/\(chose \w+: .*\)$/, ''))).toEqual(
    plan.steps.map((s) => s.summary.replace(/\(chose \w+: .*\)$/, '')),
  );
  expect(planCommands({ ...plan, steps: executed })).toEqual(planCommands(plan));
  expect(cmdline(info.pid)).toEqual(launchArgv(plan));
  await backend.delete(spec.name);
}

describe.skipIf(skip)('dry-run plans are what runs (real QEMU)', () => {
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'localvm-parity-'));
    config = loadConfig({ ...process.env, LOCALVM_HOME: join(root, 'state') });
    backend = createQemuBackend({ config, runner, onStep: (s) => executed.push(s) });
  });
  afterAll(async () => {
    for (const vm of await backend.list()) await backend.delete(vm.name);
    rmSync(root, { recursive: true, force: true });
  });

  it('create of tiny', () => createAndCompare({ name: `${prefix}pp-tiny` }));

  it('create of a qcow2 image named *.img (the format comes from qemu-img, not the name)', async () => {
    const image = join(root, 'disk.img');
    const r = await runner.run({ file: 'qemu-img', args: ['create', '-f', 'qcow2', image, '64M'] });
    expect(r.exitCode, r.stderr).toBe(0);
    // A blank disk boots nothing, but QEMU runs: the argv is what is compared.
    await createAndCompare({ name: `${prefix}pp-img`, image });
    const plan = await backend.plan({ operation: 'create', spec: parseVmSpec({ name: `${prefix}pp-img2`, image }) });
    // The overlay's qemu-img create (a disk-image VM first generates its SSH key).
    const overlay = planCommands(plan).find((c) => c.file.endsWith('qemu-img'))?.args ?? [];
    expect(overlay[overlay.indexOf('-F') + 1]).toBe('qcow2');
  });

  it('create with extra disks and with user-data', () =>
    createAndCompare({
      name: `${prefix}pp-disks`,
      disks: [
        { name: 'data', size: '32M' },
        { name: 'logs', size: '16M' },
      ],
      userData: '#cloud-config\nhostname: parity\n',
    }));

  it('stop and start: the executed steps and the started argv are the planned ones', async () => {
    const spec = parseVmSpec({ name: `${prefix}pp-life`, memory: 128 });
    await backend.create(spec);
    const stopPlan = await backend.plan({ operation: 'stop', name: spec.name, timeoutMs: 30_000 });
    executed.length = 0;
    await backend.stop(spec.name, { timeoutMs: 30_000 });
    // A graceful stop that worked runs the planned top-level steps and none of the fallbacks.
    expect(executed.map((s) => s.summary)).toEqual(stopPlan.steps.map((s) => s.summary));
    expect(stopPlan.steps.map((s) => s.summary)).toContainEqual(expect.stringMatching(/^QMP system_powerdown on /));

    const startPlan = await backend.plan({ operation: 'start', name: spec.name });
    expect((await backend.info(spec.name)).state).toBe('stopped');
    executed.length = 0;
    const started = await backend.start(spec.name);
    expect(executed.map((s) => s.summary)).toEqual(startPlan.steps.map((s) => s.summary));
    expect(cmdline(started.pid)).toEqual(launchArgv(startPlan));
  });
});
