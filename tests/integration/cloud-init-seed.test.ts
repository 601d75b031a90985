/**
 * cloud-init user-data on QEMU: delivered as a NoCloud seed, a read-only ISO 9660 disk
 * labelled `cidata` holding user-data and meta-data, which is where cloud images look for
 * it. The tiny guest has no cloud-init and no iso9660 driver, so the test reads the raw disk
 * in the guest: the volume label and the files' bytes must be there.
 */
import { readFile, stat, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { realClock, type OperationContext } from '../../src/context.js';
import { createVm, deleteVm, vmInfo, waitForVmReady } from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import { missingTools } from '../fixtures/tools.js';

const skip = missingTools('qemu-system-x86_64');
const name = 'pytest-test-seed';
const marker = 'localvm-seed-marker-4f2a';

describe.skipIf(skip)('cloud-init NoCloud seed on QEMU', () => {
  let home: string;
  let ctx: OperationContext;

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'lvm-seed-'));
    ctx = { config: loadConfig({ ...process.env, LOCALVM_HOME: home }), runner: createExecaRunner(), clock: realClock };
    await createVm({ name, image: 'tiny', memory: 128, userData: `#cloud-config\n# ${marker}\n` }, ctx);
    await waitForVmReady(name, {}, ctx);
  });

  afterAll(async () => {
    await deleteVm(name, ctx);
    await rm(home, { recursive: true, force: true });
  });

  it('keeps the seed private on the host and attaches it read-only', async () => {
    const seed = join(home, 'vms', name, 'seed');
    expect((await stat(seed)).mode & 0o777).toBe(0o700);
    expect((await stat(join(seed, 'user-data'))).mode & 0o777).toBe(0o600);
    expect(await readFile(join(seed, 'meta-data'), 'utf8')).toMatch(new RegExp(`^instance-id: ${name}-[0-9a-f]{16}\n`));
    const cmdline = (await readFile(`/proc/${(await vmInfo(name, ctx)).pid}/cmdline`, 'utf8')).split('\0');
    const iso = join(home, 'vms', name, 'seed.iso');
    expect((await stat(iso)).mode & 0o777).toBe(0o600);
    expect(cmdline).toContain(`file=${iso},format=raw,if=none,id=seed0,readonly=on`);
    // The root disk (none here: tiny boots a kernel) is the only boot candidate; the seed never is.
    expect(cmdline.filter((a) => a.includes('bootindex'))).toEqual([]);
  });

  it('shows the guest a disk labelled cidata that holds user-data and meta-data', async () => {
    const vm = await connect(name, ctx);
    const r = await vm.shell(
      'for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done; ' +
        // ISO 9660: the primary volume descriptor at 32 KiB, its volume id at byte 40 of it.
        'dd if=/dev/vda bs=1 skip=32808 count=6 2>/dev/null; echo; ' +
        `head -c 8388608 /dev/vda | grep -a -c '${marker}'; ` +
        `head -c 8388608 /dev/vda | grep -a -c 'instance-id: ${name}-'`,
      { timeoutMs: 60_000 },
    );
    expect({ exitCode: r.exitCode, lines: r.stdout.trim().split('\n') }).toEqual({
      exitCode: 0,
      lines: ['cidata', '1', '1'],
    });
  });
});
