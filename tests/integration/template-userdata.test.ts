/**
 * Templates of VMs with cloud-init user-data on real QEMU (TCG). tiny has no cloud-init, so
 * this checks the recording path: the seed the frozen machine had moves into the template,
 * every clone attaches that same file read-only (its device layout matches the freeze), and
 * a VM with user-data can be frozen with `from` too. The Debian guest, where cloud-init runs
 * and is waited for before the freeze, is measured by bench/template-debian.ts.
 */
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { realClock, type OperationContext } from '../../src/context.js';
import { createTemplate, deleteTemplate, listTemplates } from '../../src/operations/template.js';
import { createVm, deleteVm, listVms, vmInfo, waitForVmReady } from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const skip = (await missingQemuOrTiny()) !== undefined;
const USER_DATA = '#cloud-config\nwrite_files:\n  - path: /etc/from-user-data\n    content: hi\n';

describe.skipIf(skip)('templates of VMs with user-data (real QEMU)', () => {
  let home: string;
  let ctx: OperationContext;
  const argv = async (vm: string) =>
    (await readFile(`/proc/${(await vmInfo(vm, ctx)).pid}/cmdline`, 'utf8')).split('\0');

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'lvm-tud-'));
    ctx = { config: loadConfig({ ...process.env, LOCALVM_HOME: home }), runner: createExecaRunner(), clock: realClock };
  });

  afterAll(async () => {
    for (const v of await listVms(ctx).catch(() => [])) await deleteVm(v.name, ctx).catch(() => undefined);
    for (const t of await listTemplates(ctx).catch(() => [])) await deleteTemplate(t.name, ctx).catch(() => undefined);
    await rm(home, { recursive: true, force: true });
  });

  it('from a spec: the seed moves into the template and every clone attaches it read-only', async () => {
    const t = await createTemplate({ name: 'tud-t', spec: { memory: 128, userData: USER_DATA } }, ctx);
    const record = JSON.parse(await readFile(join(t.dir, 'template.json'), 'utf8'));
    const seed = record.seedImage ?? record.seedDir;
    expect(seed).toMatch(new RegExp(`^${t.dir}/seed`));
    expect(((await stat(seed)).mode & 0o077).toString(8)).toBe('0');
    expect(t.spec.userData).toBe(USER_DATA);

    await createVm({ name: 'tud-clone', template: 'tud-t' }, ctx);
    await waitForVmReady('tud-clone', {}, ctx);
    const args = (await argv('tud-clone')).join(' ');
    expect(args).toContain(record.seedImage ? `file=${seed},format=raw,if=none,id=seed0,readonly=on` : `dir=${seed}`);
    await deleteVm('tud-clone', ctx);
    expect(await deleteTemplate('tud-t', ctx)).toEqual({ deleted: true });
  });

  it('from a running VM with user-data: its seed becomes the template’s, and it continues as a clone with it', async () => {
    await createVm({ name: 'tud-src', memory: 128, userData: USER_DATA }, ctx);
    await waitForVmReady('tud-src', {}, ctx);
    const t = await createTemplate({ name: 'tud-f', from: 'tud-src' }, ctx);
    const record = JSON.parse(await readFile(join(t.dir, 'template.json'), 'utf8'));
    const seed: string = record.seedImage ?? record.seedDir;
    expect(seed.startsWith(t.dir)).toBe(true);
    expect((await vmInfo('tud-src', ctx)).state).toBe('running');
    expect((await argv('tud-src')).join(' ')).toContain(seed);
  });
});
