/**
 * The QEMU backend, assembled: daemonized QEMU processes that outlive their creator, one
 * directory per VM, driven over QMP (lifecycle) and the guest agent (exec, files,
 * readiness). The parts live in their own files over one QemuHost: lifecycle.ts (plan,
 * then apply), guest.ts (the agent transport), disks.ts and snapshot.ts (capabilities).
 */
import type { Backend, DiskCapable, QmpCapable, SnapshotCapable, SshCapable, VolumeCapable } from '../../backend.js';
import type { StepObserver } from './apply.js';
import { createDiskOps } from './disks.js';
import { consoleTail } from './guest.js';
import { createQemuHost, type QemuBackendOptions } from './host.js';
import { createLifecycle, settleForCapability } from './lifecycle.js';
import { notFound, observe, requireRecord, requireRunning, toInfo } from './observe.js';
import { QEMU_BACKEND } from './register.js';
import { createSnapshotOps } from './snapshot.js';
import { createSshAccess } from './ssh/access.js';
import { qemuTransport, qemuTransportOf } from './ssh/choose.js';
import { closeSshMaster } from './ssh/transport.js';
import { listVmNames, writeRecord } from './state.js';
import { createTemplateOps, type TemplateCapable } from './template/ops.js';
import { createHoldOps, type HoldCapable } from './template/hold.js';
import type { VmAccess } from './vmAccess.js';
import { createVolumeOps } from './volumes.js';

export type { QemuBackendOptions } from './host.js';

export type QemuBackend = Backend &
  Required<Pick<Backend, 'createOrAdopt'>> &
  QmpCapable &
  SnapshotCapable &
  DiskCapable &
  VolumeCapable &
  SshCapable &
  TemplateCapable &
  HoldCapable;

/** Creates the QEMU backend for `config`. Keep one instance per process: it owns the in-process socket mutexes. */
export function createQemuBackend(options: QemuBackendOptions & { onStep?: StepObserver }): QemuBackend {
  const host = createQemuHost(options);
  const lifecycle = createLifecycle(host, options.onStep);
  const access: VmAccess = {
    runner: host.runner,
    // Every capability operation first completes an interrupted launch (see settleForCapability).
    lifecycle: (name, what, fn) =>
      host.lifecycle(name, what, async () => {
        await settleForCapability(host, name, what);
        return fn();
      }),
    async load(name) {
      const { o, record } = await requireRecord(host, name);
      return { record, running: o.state.state === 'running' };
    },
    qmpSession: host.qmpSession,
    log: host.log,
  };
  const guest = (name: string) => qemuTransport(host, name);
  const { releaseVm, ...volumes } = createVolumeOps(host, access);

  return {
    name: QEMU_BACKEND,
    ...lifecycle,
    ...createSnapshotOps({
      ...access,
      // Both ways in hold connections a loadvm sends back in time.
      dropAgent: async (p) => {
        await host.sessions.drop(p.qgaSocket);
        await closeSshMaster(host, p);
      },
    }),
    ...createDiskOps({ ...access, writeRecord }),
    ...createTemplateOps(host),
    ...createHoldOps(host),
    ...volumes,

    /** Deleting a VM detaches its standalone disks (after its lock is released) and never deletes them. */
    async delete(name) {
      host.identity.drop(name);
      await lifecycle.delete(name);
      await releaseVm(name);
    },
    ...createSshAccess(host),

    async list() {
      const names = await listVmNames(host.config.stateDir);
      return Promise.all(names.map(async (name) => toInfo(host, name, await observe(host, name))));
    },

    async info(name) {
      const o = await observe(host, name);
      if (!o.exists) throw notFound(name);
      return toInfo(host, name, o);
    },

    guest,
    transport: (name, kind) => qemuTransportOf(host, name, kind),
    consoleTail: (name, lines) => consoleTail(host, name, lines),

    async qmp(name, command, args) {
      const { record } = await requireRunning(host, name);
      return host.qmp(name, record.paths, command, args, 30_000);
    },
  };
}
