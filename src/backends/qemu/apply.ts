/**
 * Executes a QEMU plan, step by step, exactly as planned (see plan.ts). A step's fallback
 * (`otherwise`) runs when the step finds it was not enough: a wait whose process did not
 * exit, or one that follows a graceful request that could not be delivered.
 */
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LocalVmError, tail } from '../../errors.js';
import { hostFsError } from '../../host/fs.js';
import { commandError, runChecked } from '../../runner.js';
import { isTransientLaunchFailure } from './classify.js';
import { applyDownload } from './image/remote.js';
import type { QemuHost } from './host.js';
import { killHard, waitGone } from './observe.js';
import type { QemuStep } from './plan.js';
import { mkdirPrivate } from '../../host/privateDir.js';
import { readPidFile, removeStaleRuntime, writeRecord, type VmRecord } from './state.js';
import { readPublicKey } from './ssh/transport.js';
import { mergeUserData } from './ssh/userData.js';
import { applyCloneAction } from './template/restore.js';

/** Called with each step as it is executed (tests compare what ran with what was planned). */
export type StepObserver = (step: QemuStep) => void;

export async function applySteps(
  host: QemuHost,
  vm: string,
  steps: readonly QemuStep[],
  onStep?: StepObserver,
): Promise<void> {
  // A graceful request that could not be delivered is not waited for: its wait falls back at once.
  let undelivered = false;
  for (const step of steps) {
    onStep?.(step);
    let outcome: Outcome;
    try {
      outcome = await applyStep(host, vm, step, undelivered);
    } catch (error) {
      // A full disk or a read-only mount is the host's state, said as HOST_FS, not a bug.
      throw hostFsError(error, step.summary);
    }
    undelivered = outcome === 'undelivered';
    if (outcome === 'insufficient' && step.otherwise) await applySteps(host, vm, step.otherwise, onStep);
  }
}

type Outcome = 'done' | 'undelivered' | 'insufficient';

async function applyStep(host: QemuHost, vm: string, step: QemuStep, afterUndelivered: boolean): Promise<Outcome> {
  const a = step.action;
  switch (a.kind) {
    case 'none':
      return 'done';
    case 'mkdir':
      if (!a.exclusive) {
        await mkdirPrivate(a.path);
        return 'done';
      }
      try {
        await mkdir(a.path, { mode: 0o700 });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
          throw new LocalVmError('ALREADY_EXISTS', `a QEMU VM named ${vm} already exists`, { vm });
        }
        throw error;
      }
      return 'done';
    case 'write-record':
      await writeRecord(a.record);
      return 'done';
    case 'touch':
      await (await open(a.path, 'a', 0o600)).close();
      return 'done';
    case 'download':
      await applyDownload(host, vm, a);
      return 'done';
    case 'write-seed':
      await mkdir(a.dir, { mode: 0o700 });
      await writeFile(
        join(a.dir, 'user-data'),
        a.sshKey ? mergeUserData(a.userData, await readPublicKey(a.sshKey.keyFile), a.sshKey.user) : (a.userData ?? ''),
        { mode: 0o600 },
      );
      await writeFile(join(a.dir, 'meta-data'), a.metaData, { mode: 0o600 });
      return 'done';
    case 'run':
      if (!step.command) throw new LocalVmError('INTERNAL', `plan step "${step.summary}" has no command`);
      await runChecked(host.runner, step.command, { timeoutMs: a.timeoutMs });
      return 'done';
    case 'launch':
      await launch(host, step, a.record, a.accel.accel, a.accel.reason);
      return 'done';
    case 'remove-runtime':
      await removeStaleRuntime(a.paths);
      return 'done';
    case 'drop-agent':
      await host.sessions.drop(a.socket);
      return 'done';
    case 'qmp':
      try {
        await host.qmp(vm, a.paths, a.command, undefined, 2_000);
        return 'done';
      } catch (error) {
        if (!a.optional) throw error;
        host.log(`${vm}: QMP ${a.command} failed: ${(error as Error).message}`);
        return 'undelivered';
      }
    case 'await-exit': {
      if (afterUndelivered) return 'insufficient';
      let gone = false;
      const deadline = performance.now() + a.timeoutMs;
      while (!gone) {
        const left = deadline - performance.now();
        if (left <= 0) break;
        gone = await waitGone(vm, a.pid, Math.min(left, a.repressMs ?? left));
        if (!gone && a.repressMs && a.paths && deadline - performance.now() > 0) {
          await host.qmp(vm, a.paths, 'system_powerdown', undefined, 2_000).catch(() => undefined);
        }
      }
      if (!gone) host.log(`${vm}: QEMU did not exit within ${a.timeoutMs} ms${step.otherwise ? ', forcing' : ''}`);
      return gone ? 'done' : 'insufficient';
    }
    case 'kill':
      await killHard(vm, a.pid);
      return 'done';
    case 'mark-stopped':
      await writeRecord({ ...a.record, phase: 'ready', desiredState: 'stopped', pid: undefined, startedAt: undefined });
      return 'done';
    case 'remove':
      for (const path of a.paths) await rm(path, { recursive: true, force: true });
      return 'done';
    case 'copy-blank':
    case 'resume':
    case 'restore':
    case 'personalize':
      await applyCloneAction(host, vm, a);
      return 'done';
  }
}

/** Runs QEMU (it daemonizes), then records the running VM; a failed launch leaves nothing running. */
async function launch(
  host: QemuHost,
  step: QemuStep,
  record: VmRecord,
  accel: string,
  accelReason: string,
): Promise<void> {
  const name = record.name;
  const p = record.paths;
  if (!step.command) throw new LocalVmError('INTERNAL', 'launch step has no command');
  host.log(`${name}: ${accelReason}`);
  const result = await host.runner.run(step.command, { timeoutMs: 60_000 });
  if (result.exitCode !== 0 || result.timedOut) {
    const failure = commandError(result, `QEMU for ${name} did not start: ${tail(result.stderr, 5, 1000)}`);
    const error = isTransientLaunchFailure(result.stderr)
      ? new LocalVmError('TRANSIENT', failure.message, { vm: name, command: failure.command })
      : failure;
    // A QEMU that timed out while daemonizing may still have come up: never leave it behind.
    await killHard(name, await readPidFile(p.pidFile));
    await removeStaleRuntime(p);
    await writeRecord({
      ...record,
      desiredState: 'stopped',
      stopReason: 'start-failed',
      pid: undefined,
      lastError: error.message,
    });
    throw error;
  }
  await writeRecord({
    ...record,
    phase: 'ready',
    desiredState: 'running',
    stopReason: undefined,
    lastError: undefined,
    pid: await readPidFile(p.pidFile),
    accel,
    accelReason,
    startedAt: new Date().toISOString(),
  });
}
