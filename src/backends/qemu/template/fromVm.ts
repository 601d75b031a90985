/**
 * Making a template from a running, ready VM (`template create T --from VM`).
 *
 * The VM was launched without its RAM in a file, so its RAM cannot simply be shared: it is
 * paused and migrated (RAM and device state, over a unix socket as everywhere else) into a
 * second QEMU with the same devices whose RAM is the template's file (`share=on`, under the
 * machine's default RAM id, the name the stream gives its RAM blocks). That QEMU is then
 * frozen exactly as a template booted from a spec (create.ts's `freeze`), and the VM's disks
 * become the template's read-only backing files.
 *
 * The source VM then continues as the template's first clone: same name, ports, labels and
 * guest state (it is restored from what was just frozen), now on its own overlays over the
 * frozen disks. That is what a user who froze a VM they were using expects (their VM is still
 * there, still running, with its files), and the only outcome that keeps the VM usable: its
 * disks are now the template's and may never be written again. Snapshots of the source VM do
 * not carry over (they lived in its vmstate disk). Until the source QEMU is quit, any failure
 * resumes the source VM untouched.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { LocalVmError } from '../../../errors.js';
import { exists } from '../../../host/fs.js';
import { mkdirPrivate } from '../../../host/privateDir.js';
import { parseVmSpec } from '../../../schema.js';
import { applySteps } from '../apply.js';
import { buildQemuCommand, defaultRamId, type QemuAccel } from '../cmdline.js';
import type { QemuHost } from '../host.js';
import { launchFor } from '../layout.js';
import { killHard, observe, waitGone } from '../observe.js';
import { planCreate, type QemuStep } from '../plan.js';
import { readPidFile, vmsDir, writeRecord, type VmRecord } from '../state.js';
import { buildHost, freeze, frozenRecord, removeBuild, runSetup } from './create.js';
import { awaitMigration, unixUri } from './migrate.js';
import { awaitCloudInit } from './seed.js';
import { templateLockName, templatePaths, templatesDir, writeTemplate, type TemplateRecord } from './store.js';

export interface TemplateFromVmInput {
  name: string;
  /** The running VM to freeze. */
  from: string;
  /** Commands run in the source VM before it is frozen. */
  setup: string[][];
}

const ACCELS: ReadonlySet<string> = new Set(['kvm', 'tcg', 'hvf']);

/** Why `record` (observed running) cannot be frozen, or undefined when it can. Pure. */
export function fromVmProblem(record: VmRecord): string | undefined {
  if (record.template) return `it is a clone of template ${record.template.name}: make the template from a boot`;
  if (record.phase !== 'ready') return 'it is still being created';
  if (!record.accel || !ACCELS.has(record.accel)) return 'its record names no accelerator';
  return undefined;
}

// Migrating RAM out of a paused TCG guest runs at roughly 200-500 MB/s here; the bound leaves
// room for a busy host and large guests.
const migrateTimeoutMs = (memoryMiB: number) => 60_000 + memoryMiB * 100;

/**
 * Freezes running VM `input.from` as template `input.name`, then restores the VM as the
 * template's clone. ALREADY_EXISTS when the template exists; NOT_FOUND / CONFLICT when the
 * VM is missing, stopped, or cannot be frozen. A failure before the VM's QEMU is quit
 * resumes it as it was and removes every file of the template.
 */
export async function createTemplateFromVm(host: QemuHost, input: TemplateFromVmInput): Promise<TemplateRecord> {
  const { name, from, setup } = input;
  return host.lifecycle(from, 'template create', () =>
    host.lifecycle(templateLockName(name), 'template create', async () => {
      const tp = templatePaths(host.config.stateDir, name);
      const o = await observe(host, from, { lockHeld: true });
      if (!o.record) {
        throw new LocalVmError('NOT_FOUND', `no QEMU VM named ${from}`, {
          vm: from,
          hint: 'see `localvm list`; templates from a VM need a running QEMU VM',
        });
      }
      const src = o.record;
      const problem = o.state.state !== 'running' ? `it is ${o.state.state}` : fromVmProblem(src);
      if (problem !== undefined) {
        throw new LocalVmError('CONFLICT', `VM ${from} cannot be frozen as a template: ${problem}`, {
          vm: from,
          hint: `start it (localvm start ${from}), or make the template from a spec: localvm template create ${name} -f spec.json`,
        });
      }
      if (await exists(tp.dir)) {
        throw new LocalVmError('ALREADY_EXISTS', `a template named ${name} already exists`, {
          hint: `delete it first (localvm template delete ${name}) or use another name`,
          details: { template: name },
        });
      }
      const started = performance.now();
      if (src.spec.userData !== undefined) await awaitCloudInit(host, from, src.spec.timeouts.readyMs);
      await runSetup(host, from, setup, src.spec.timeouts.execMs);
      await mkdirPrivate(templatesDir(host.config.stateDir));
      await mkdir(tp.dir, { mode: 0o700 });
      const build = buildHost(host, tp.build);
      const accel = src.accel as QemuAccel;
      const bp = build.paths(name);
      // The receiving QEMU: the source's devices and files, RAM in the template's file under
      // the id the source's RAM blocks have; no port forwards (the source still holds them).
      const dst: VmRecord = {
        ...src,
        name,
        spec: { ...src.spec, name, ports: [] },
        paths: bp,
        pid: undefined,
        template: {
          name,
          role: 'source',
          ramFile: tp.ram,
          memory: src.spec.memory,
          vmgenid: randomUUID(),
          ramId: defaultRamId(src.arch),
        },
      };
      const launch = launchFor(dst, accel, host.config.qemuBinary, { incoming: true });
      let sourceQuit = false;
      try {
        await applySteps(build, name, receiverSteps(build, dst, buildQemuCommand(launch), accel));
        await migrateInto(host, src, build, dst);
        const stateBytes = await freeze(build, dst, tp.state);
        await quit(host, src);
        sourceQuit = true;
        const template = await frozenRecord(host, {
          name,
          spec: src.spec,
          bootSpec: src.spec,
          setup,
          launch,
          vm: src,
          dir: tp.dir,
          state: tp.state,
          stateBytes,
          started,
          extra: { from, ramId: defaultRamId(src.arch) },
        });
        await rename(src.paths.consoleLog, tp.consoleLog).catch(() => undefined);
        await removeBuild(build, dst, tp.build);
        await writeTemplate(host.config.stateDir, template);
        await continueAsClone(host, src, name);
        return template;
      } catch (error) {
        await killHard(name, await readPidFile(bp.pidFile));
        await removeBuild(build, dst, tp.build).catch(() => undefined);
        if (!sourceQuit) {
          await rm(tp.dir, { recursive: true, force: true });
          await resume(host, src);
        } else if (!(await exists(tp.record))) {
          // The source's QEMU is gone and its disks may be the template's already: nothing is
          // deleted, the record says stopped, and the error says where the disks are.
          await writeRecord({ ...src, desiredState: 'stopped', pid: undefined, lastError: String(error) });
          throw new LocalVmError('COMMAND_FAILED', `freezing ${from} failed after its QEMU stopped: ${String(error)}`, {
            vm: from,
            cause: error,
            hint: `its disks may have moved to ${tp.dir}: move them back into ${src.paths.dir} to start it again`,
          });
        }
        throw error;
      }
    }),
  );
}

/** The steps that start the receiving QEMU under the build state root. */
function receiverSteps(build: QemuHost, dst: VmRecord, command: QemuStep['command'], accel: QemuAccel): QemuStep[] {
  const p = dst.paths;
  const dir = (path: string): QemuStep => ({
    summary: `mkdir ${path}`,
    action: { kind: 'mkdir', path, exclusive: false },
  });
  return [
    dir(vmsDir(build.config.stateDir)),
    dir(p.dir),
    ...(p.socketDir ? [dir(p.socketDir)] : []),
    { summary: `create ${p.consoleLog}`, action: { kind: 'touch', path: p.consoleLog } },
    { summary: 'remove stale sockets', action: { kind: 'remove-runtime', paths: p } },
    {
      summary: 'start the QEMU that takes in the VM',
      command,
      action: { kind: 'launch', record: dst, accel: { accel, reason: `the source VM runs with ${accel}` } },
    },
  ];
}

/** Pauses the source and migrates its RAM and device state into the receiver (which stays paused). */
async function migrateInto(host: QemuHost, src: VmRecord, build: QemuHost, dst: VmRecord): Promise<void> {
  const timeoutMs = migrateTimeoutMs(src.spec.memory);
  const socket = join(dirname(dst.paths.qmpSocket), 'in.sock');
  const failure = (why: string) =>
    new LocalVmError('COMMAND_FAILED', `moving VM ${src.name}'s memory into template ${dst.name} failed: ${why}`, {
      vm: src.name,
    });
  // Agent connections are closed first: clones find the agent channel with no client, as a boot leaves it.
  await host.sessions.drop(src.paths.qgaSocket);
  await build.qmp(dst.name, dst.paths, 'migrate-incoming', { uri: unixUri(socket) }, 10_000);
  await host.qmpSession(src.name, src.paths, timeoutMs, async (qmp) => {
    await qmp.execute('stop');
    await qmp.execute('migrate', { uri: unixUri(socket) });
    await awaitMigration(qmp, timeoutMs, failure);
  });
  await build.qmpSession(dst.name, dst.paths, timeoutMs, (qmp) => awaitMigration(qmp, timeoutMs, failure));
  await rm(socket, { force: true });
}

async function quit(host: QemuHost, src: VmRecord): Promise<void> {
  const pid = src.pid ?? (await readPidFile(src.paths.pidFile));
  await host.qmp(src.name, src.paths, 'quit', undefined, 5_000).catch(() => undefined);
  if (!(await waitGone(src.name, pid, 10_000))) await killHard(src.name, pid);
}

/** Undoes the pause: the receiver is gone, so the source may take its disks back. */
async function resume(host: QemuHost, src: VmRecord): Promise<void> {
  await host
    .qmp(src.name, src.paths, 'cont', undefined, 10_000)
    .catch((e: unknown) => host.log(`${src.name}: could not resume after a failed template create: ${String(e)}`));
}

/**
 * The source VM, now without its disks, becomes a clone of the template under its own
 * name, ports and labels: its directory is replaced by a clone's (restored from the state
 * just frozen, so the guest continues where it was paused).
 */
async function continueAsClone(host: QemuHost, src: VmRecord, template: string): Promise<void> {
  const s = src.spec;
  const spec = parseVmSpec({
    name: src.name,
    template,
    ports: s.ports,
    labels: s.labels,
    isolated: s.isolated,
    readiness: s.readiness,
    timeouts: s.timeouts,
  });
  await host.sessions.drop(src.paths.qgaSocket);
  await rm(src.paths.dir, { recursive: true, force: true });
  if (src.paths.socketDir) await rm(src.paths.socketDir, { recursive: true, force: true });
  try {
    await applySteps(host, src.name, (await planCreate(host, spec, { probe: true })).steps);
  } catch (error) {
    throw new LocalVmError(
      'COMMAND_FAILED',
      `template ${template} was made, but VM ${src.name} could not continue as its clone: ${(error as Error).message}`,
      { vm: src.name, cause: error, hint: `recreate it: localvm create ${src.name} --template ${template}` },
    );
  }
}
