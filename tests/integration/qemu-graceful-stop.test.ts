/**
 * Graceful stop of the `tiny` guest through the QEMU backend (issue 10, defect 7): QMP
 * `system_powerdown` presses the ACPI power button, and the guest must power itself off
 * instead of the backend waiting out its timeout and forcing.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createQemuBackend, type QemuBackend } from '../../src/backends/qemu/index.js';
import { loadConfig } from '../../src/config.js';
import { createExecaRunner } from '../../src/runner.js';
import { parseVmSpec } from '../../src/schema.js';
import { missingQemuOrTiny } from '../fixtures/tools.js';

const skip = (await missingQemuOrTiny()) !== undefined;
const prefix = loadConfig().testPrefix;
const NAME = `${prefix}gs-tiny`;

/** True while a non-zombie process with this pid exists. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Pids of live QEMU processes whose `-name` is `name`, for cleanup. */
function qemuPids(name: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      const i = cmdline.indexOf('-name');
      if (i !== -1 && cmdline[i + 1] === name && alive(Number(entry))) pids.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return pids;
}

async function waitReady(backend: QemuBackend, name: string): Promise<void> {
  const deadline = performance.now() + 90_000;
  let detail = '';
  while (performance.now() < deadline) {
    const p = await backend.guest(name).probe(2_000);
    if (p.ready) return;
    detail = p.detail;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${name} never became ready: ${detail}`);
}

describe.skipIf(skip)('graceful stop of tiny (real QEMU)', () => {
  let root: string;
  let backend: QemuBackend;
  const logs: string[] = [];

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'lvm-gs-'));
    const config = loadConfig(process.env, { stateDir: join(root, 'state'), runDir: join(root, 'run'), accel: 'auto' });
    backend = createQemuBackend({ config, runner: createExecaRunner(), log: (line) => logs.push(line) });
  });

  afterAll(async () => {
    if (backend) for (const vm of await backend.list()) await backend.delete(vm.name).catch(() => undefined);
    for (const pid of qemuPids(NAME)) process.kill(pid, 'SIGKILL');
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('powers off on the ACPI power button right after create, without forcing', async () => {
    const info = await backend.create(parseVmSpec({ name: NAME, memory: 128 }));
    expect(info.state).toBe('running');
    const pid = info.pid as number;
    expect(alive(pid)).toBe(true);
    // Ready as soon as the agent answers: the power button must already work then.
    await waitReady(backend, NAME);

    logs.length = 0;
    const stopped = await backend.stop(NAME, { timeoutMs: 10_000 });
    expect(stopped.state).toBe('stopped');
    expect(alive(pid)).toBe(false);
    expect(logs.filter((l) => /forcing|system_powerdown failed/.test(l))).toEqual([]);
  });

  it('powers off gracefully again after a restart that has been up a while', async () => {
    const info = await backend.start(NAME);
    const pid = info.pid as number;
    await waitReady(backend, NAME);
    // Give the background module loading and acpid every chance to finish.
    expect((await backend.guest(NAME).exec(['sleep', '2'])).exitCode).toBe(0);

    logs.length = 0;
    await backend.stop(NAME, { timeoutMs: 10_000 });
    expect(alive(pid)).toBe(false);
    expect(logs.filter((l) => /forcing|system_powerdown failed/.test(l))).toEqual([]);
  });
});
