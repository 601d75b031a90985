/**
 * Making a template from a spec: a fresh VM is booted with its RAM in the template's file
 * (`share=on`), waited for until its agent answers, given the setup commands, then frozen:
 * `stop`, x-ignore-shared, the device state migrated to the template's `state` file, `quit`.
 * Its disks become the template's read-only backing files, and a cloud-init seed moves into
 * the template (see seed.ts: cloud-init has finished first). The build VM is planned and
 * launched by the ordinary create plan (so its device layout is a normal VM's), under a
 * private state root inside the template directory, and removed when it is frozen.
 */
import { randomUUID } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { isLocalVmError, LocalVmError } from '../../../errors.js';
import { exists } from '../../../host/fs.js';
import { mkdirPrivate } from '../../../host/privateDir.js';
import type { VmSpec } from '../../../schema.js';
import { poll } from '../../../time/poll.js';
import { applySteps } from '../apply.js';
import { buildQemuCommand, IDENTITY_PORT } from '../cmdline.js';
import { agentTransport } from '../guest.js';
import { createQemuHost, type QemuHost } from '../host.js';
import { launchFor, STATE_DISK_BYTES } from '../layout.js';
import { qemuImg } from '../qemuImg.js';
import { runChecked } from '../../../runner.js';
import { killHard, waitGone } from '../observe.js';
import { planCreate, type QemuStep } from '../plan.js';
import { guestExec, guestPutFile, QgaClient } from '../qga.js';
import { identitySocketOf, readPidFile, type TemplateLink, type VmRecord } from '../state.js';
import { helperArgv, IdentityPort } from './identity.js';
import { identityProgram } from './identityProgram.js';
import { depsOf } from './compat.js';
import { awaitMigration, ignoreShared, receiveToFile, unixUri } from './migrate.js';
import { awaitCloudInit, freezeSeed } from './seed.js';
import {
  blankPath,
  bootFilesOf,
  bootIdentity,
  fileSha256,
  qemuVersion,
  templateLockName,
  templatePaths,
  templatesDir,
  writeTemplate,
  type TemplateRecord,
} from './store.js';

export interface TemplateCreateInput {
  name: string;
  spec: VmSpec;
  setup: string[][];
}

/** The create plan's steps with the VM turned into a template source (RAM in `link.ramFile`, shared). */
function asSource(steps: QemuStep[], link: TemplateLink, qemuBinary: string | undefined): QemuStep[] {
  return steps.map((step) => {
    const a = step.action;
    if (a.kind === 'write-record') return { ...step, action: { ...a, record: { ...a.record, template: link } } };
    if (a.kind !== 'launch') return step;
    const record: VmRecord = { ...a.record, template: link };
    const command = buildQemuCommand(launchFor(record, a.accel.accel, qemuBinary));
    return { ...step, command, action: { ...a, record } };
  });
}

/**
 * Creates template `input.name`. ALREADY_EXISTS when it exists (or is being made by another
 * process); a failure at any point removes everything it made, the build VM included.
 */
export async function createTemplate(host: QemuHost, input: TemplateCreateInput): Promise<TemplateRecord> {
  const { name, setup } = input;
  const tp = templatePaths(host.config.stateDir, name);
  return host.lifecycle(templateLockName(name), 'template create', async () => {
    if (await exists(tp.dir)) {
      throw new LocalVmError('ALREADY_EXISTS', `a template named ${name} already exists`, {
        hint: `delete it first (localvm template delete ${name}) or use another name`,
        details: { template: name },
      });
    }
    const started = performance.now();
    await mkdirPrivate(templatesDir(host.config.stateDir));
    await mkdir(tp.dir, { mode: 0o700 });
    const build = buildHost(host, tp.build);
    const spec: VmSpec = { ...input.spec, name, ports: [], labels: {} };
    let record: VmRecord | undefined;
    try {
      const link: TemplateLink = {
        name,
        role: 'source',
        ramFile: tp.ram,
        memory: spec.memory,
        vmgenid: randomUUID(),
        identityPort: true,
      };
      const steps = asSource((await planCreate(build, spec, { probe: true })).steps, link, host.config.qemuBinary);
      const launchStep = steps.find((s) => s.action.kind === 'launch');
      if (launchStep?.action.kind !== 'launch') throw new LocalVmError('INTERNAL', 'create plan has no launch');
      record = launchStep.action.record;
      const launch = launchFor(record, launchStep.action.accel.accel, host.config.qemuBinary);
      await applySteps(build, name, steps);
      await awaitAgent(build, name, spec.timeouts.readyMs);
      if (spec.userData !== undefined) await awaitCloudInit(build, name, spec.timeouts.readyMs);
      await settle(build, record);
      await runSetup(build, name, setup, spec.timeouts.execMs);
      const helper = await parkHelper(build, record);
      let stateBytes: number;
      try {
        stateBytes = await freeze(build, record, tp.state, { agentConnected: true });
      } finally {
        helper?.port.close();
      }
      const template = await frozenRecord(host, {
        name,
        spec: input.spec,
        bootSpec: spec,
        setup,
        launch,
        vm: record,
        dir: tp.dir,
        state: tp.state,
        stateBytes,
        started,
        extra: {
          identityPort: true,
          ...(helper ? { identityHelper: true, ...(helper.kind === 'program' ? { identityProgram: true } : {}) } : {}),
        },
      });
      await rename(record.paths.consoleLog, tp.consoleLog).catch(() => undefined);
      await removeBuild(build, record, tp.build);
      await writeTemplate(host.config.stateDir, template);
      return template;
    } catch (error) {
      if (record) await killHard(name, await readPidFile(record.paths.pidFile));
      if (record) await removeBuild(build, record, tp.build);
      await rm(tp.dir, { recursive: true, force: true });
      throw error;
    }
  });
}

/**
 * The QemuHost a template is built in: the caller's, with its state under `dir` (so the
 * build VM is not one of the home's VMs). Its agent sessions linger as everywhere (qemu-ga
 * sleeps 100 ms after each hang-up, so closing between the build's calls cost 100-200 ms
 * each); freeze and removeBuild drop the connection, so none reaches into the frozen state.
 */
export function buildHost(host: QemuHost, dir: string): QemuHost {
  return createQemuHost({
    config: { ...host.config, stateDir: dir },
    runner: host.runner,
    log: host.log,
    findImage: host.findImage,
  });
}

export async function removeBuild(build: QemuHost, record: VmRecord, dir: string): Promise<void> {
  await build.sessions.drop(record.paths.qgaSocket);
  if (record.paths.socketDir) await rm(record.paths.socketDir, { recursive: true, force: true });
  await rm(dir, { recursive: true, force: true });
}

/** Waits until the build VM's agent answers (the same probe readiness uses). */
export async function awaitAgent(build: QemuHost, name: string, timeoutMs: number): Promise<void> {
  const guest = agentTransport(build, name);
  let last = '';
  await poll(
    async () => {
      const r = await guest.probe(5_000);
      last = r.detail;
      if (r.ready) return true;
      if (r.detail.startsWith('process not running'))
        throw new LocalVmError('COMMAND_FAILED', `the template's VM stopped while booting: ${r.detail}`);
      return undefined;
    },
    {
      what: `the template VM ${name} to answer`,
      timeoutMs,
      initialMs: 20,
      maxMs: 500,
      onTimeout: () => new LocalVmError('TIMEOUT', `the template VM ${name} did not answer: ${last}`),
    },
  );
}

// The tiny guest brings its network up in the background after the agent answers: wait
// (bounded, best effort) until a non-loopback interface has an IPv4 address, so clones do
// not each repeat the DHCP exchange half-way through.
const SETTLE_MS = 10_000;
const SETTLE_SCRIPT =
  'i=0; while [ $i -lt 100 ]; do ip -4 addr 2>/dev/null | grep -v " lo" | grep -q "inet " && exit 0; sleep 0.1; i=$((i+1)); done; exit 0';

/** True when the agent's interface list has a non-loopback interface with an IPv4 address. Pure. */
export function hasIpv4Address(interfaces: unknown): boolean {
  if (!Array.isArray(interfaces)) return false;
  return interfaces.some((i: { name?: unknown; 'ip-addresses'?: { 'ip-address-type'?: unknown }[] } | null) => {
    const addresses = i?.['ip-addresses'];
    return i?.name !== 'lo' && Array.isArray(addresses) && addresses.some((a) => a?.['ip-address-type'] === 'ipv4');
  });
}

/**
 * The wait itself, asked of the agent (guest-network-get-interfaces: getifaddrs in qemu-ga,
 * no guest process per look, so it can look every few ms); an agent without that command
 * gets the same wait as a guest shell loop, which starts three processes per look.
 */
async function settle(build: QemuHost, record: VmRecord): Promise<void> {
  const name = record.name;
  const skipped = (error: unknown) => build.log(`${name}: network settle skipped: ${(error as Error).message}`);
  try {
    await poll(
      async () => {
        const interfaces = await build.sessions.run(record.paths.qgaSocket, build.lockPath(name, 'qga'), 5_000, (qga) =>
          qga.execute('guest-network-get-interfaces', undefined, 5_000),
        );
        return hasIpv4Address(interfaces) ? true : undefined;
      },
      { what: `the network of template VM ${name}`, timeoutMs: SETTLE_MS, initialMs: 10, factor: 1.5, maxMs: 50 },
    );
    return;
  } catch (error) {
    if (!isLocalVmError(error, 'COMMAND_FAILED')) return skipped(error);
  }
  await agentTransport(build, name)
    .exec(['/bin/sh', '-c', SETTLE_SCRIPT], { timeoutMs: SETTLE_MS + 5_000 })
    .catch(skipped);
}

export async function runSetup(build: QemuHost, name: string, setup: string[][], timeoutMs: number): Promise<void> {
  const guest = agentTransport(build, name);
  for (const argv of setup) {
    const r = await guest.exec(argv, { timeoutMs });
    if (r.exitCode !== 0) {
      throw new LocalVmError('COMMAND_FAILED', `template setup command ${JSON.stringify(argv)} exited ${r.exitCode}`, {
        details: { argv, stdout: r.stdout.slice(-2000), stderr: r.stderr.slice(-2000) },
      });
    }
  }
}

/**
 * Parks the identity helper in the build VM (see identity.ts) and returns the port's host
 * end, connected (it must stay connected until the VM is frozen), and which helper parked:
 * the static program (identity.c, when this host can build it for the guest's architecture),
 * else the shell script. A guest that can park neither (no /bin/sh, no sysfs ports) still
 * makes a template; its clones are personalised through the agent, and the log says why.
 */
async function parkHelper(
  build: QemuHost,
  record: VmRecord,
): Promise<{ port: IdentityPort; kind: 'program' | 'shell' } | undefined> {
  const name = record.name;
  const port = await IdentityPort.connect(identitySocketOf(record.paths), 5_000);
  const program = await identityProgram(build, record.arch);
  const bytes = program ? await readFile(program).catch(() => undefined) : undefined;
  const agent = <T>(fn: (qga: QgaClient) => Promise<T>) =>
    build.sessions.run(record.paths.qgaSocket, build.lockPath(name, 'qga'), 30_000, fn);
  if (bytes) {
    for (const path of GUEST_PROGRAM_PATHS) {
      try {
        await agent((qga) => guestPutFile(qga, path, bytes, 30_000));
        await startParked(build, record, port, programArgv(path));
        return { port, kind: 'program' };
      } catch (error) {
        // A file system mounted noexec (Debian's /run) cannot run it: the copy must not stay.
        await agent((qga) => guestExec(qga, ['/bin/rm', '-f', path], { timeoutMs: 10_000 })).catch(() => undefined);
        build.log(`${name}: identity program not parked from ${path} (${(error as Error).message})`);
      }
    }
  }
  try {
    await startParked(build, record, port, helperArgv());
    return { port, kind: 'shell' };
  } catch (error) {
    port.close();
    build.log(`${name}: identity helper not parked (${(error as Error).message}); clones will use the agent`);
    return undefined;
  }
}

/**
 * Where the program is copied in the guest, in order: a tmpfs first, then /tmp for guests
 * whose /run is mounted noexec (Debian's). It removes its file once it runs.
 */
const GUEST_PROGRAM_PATHS = ['/run/localvm-identity', '/tmp/localvm-identity'];

/**
 * The argv that makes the copied program executable and runs it on the identity port, told to
 * remove its own file. Through /bin/sh because the agent cannot set a file's mode. Pure.
 */
export function programArgv(path: string): string[] {
  return ['/bin/sh', '-c', 'chmod 700 "$0" && exec "$0" "$1" "$0"', path, IDENTITY_PORT];
}

/**
 * Starts `argv` through the agent (not waited for) and waits until it says `parked` on the
 * port; a helper that exits first (a guest it cannot run in) fails at once with its status.
 */
async function startParked(build: QemuHost, record: VmRecord, port: IdentityPort, argv: string[]): Promise<void> {
  const name = record.name;
  const agent = <T>(fn: (qga: QgaClient) => Promise<T>) =>
    build.sessions.run(record.paths.qgaSocket, build.lockPath(name, 'qga'), 10_000, fn);
  const [path, ...arg] = argv;
  const started = (await agent((qga) => qga.execute('guest-exec', { path, arg }, 10_000))) as { pid: number };
  const parked = port.nextLine(10_000, `the identity helper in template ${name}`);
  // Until it is parked, its status is looked at every 100 ms; the look-out ends either way.
  let watching = true;
  let wake = () => undefined as void;
  const watch = (async (): Promise<string> => {
    while (watching) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 100);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      if (!watching) return '';
      const st = (await agent((qga) => qga.execute('guest-exec-status', { pid: started.pid }, 5_000))) as {
        exited: boolean;
        exitcode?: number;
        signal?: number;
      };
      if (st.exited) return st.signal !== undefined ? `signal ${st.signal}` : `status ${st.exitcode}`;
    }
    return '';
  })();
  try {
    const line = await Promise.race([parked, watch.then((how) => ({ exited: how }))]);
    if (typeof line !== 'string') throw new Error(`it exited (${line.exited})`);
    if (line.trim() !== 'parked') throw new Error(`it said "${line.slice(0, 200)}"`);
  } finally {
    watching = false;
    wake();
    parked.catch(() => undefined);
    await watch.catch(() => undefined);
  }
}

/**
 * Stops the build VM and migrates its device state to `file` (RAM stays in the shared file:
 * x-ignore-shared), then quits it. Returns the state's size in bytes. `agentConnected`: a
 * synchronised agent connection stays open through the freeze, so the frozen agent sits in
 * a read with a host attached and a clone that connects before it runs is answered at once
 * (with no host attached, qemu-ga polls every 100 ms); otherwise the agent is left with no
 * client, as a VM that never ran after an incoming migration (template create --from) has it.
 */
export async function freeze(
  build: QemuHost,
  record: VmRecord,
  file: string,
  options: { agentConnected?: boolean } = {},
): Promise<number> {
  const p = record.paths;
  await build.sessions.drop(p.qgaSocket);
  const agent = options.agentConnected ? await QgaClient.connect(p.qgaSocket, { timeoutMs: 10_000 }) : undefined;
  try {
    return await freezeState(build, record, file);
  } finally {
    agent?.close();
  }
}

async function freezeState(build: QemuHost, record: VmRecord, file: string): Promise<number> {
  const name = record.name;
  const p = record.paths;
  const socket = join(dirname(p.qmpSocket), 'mig.sock');
  const receiver = await receiveToFile(socket, file);
  try {
    await build.qmpSession(name, p, 60_000, async (qmp) => {
      await qmp.execute('stop');
      await ignoreShared(qmp);
      await qmp.execute('migrate', { uri: unixUri(socket) });
      await awaitMigration(
        qmp,
        60_000,
        (why) => new LocalVmError('COMMAND_FAILED', `saving template ${name}'s device state failed: ${why}`),
      );
    });
    const bytes = await receiver.done;
    await build.qmp(name, p, 'quit', undefined, 5_000).catch(() => undefined);
    if (!(await waitGone(name, record.pid ?? (await readPidFile(p.pidFile)), 10_000)))
      await killHard(name, await readPidFile(p.pidFile));
    return bytes;
  } catch (error) {
    if (isLocalVmError(error)) throw error;
    throw new LocalVmError(
      'COMMAND_FAILED',
      `saving template ${name}'s device state failed: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  } finally {
    receiver.close();
  }
}

/**
 * The record of a template frozen from the VM `vm` (QEMU has quit; its RAM is in `state`):
 * its disks and seed move into `dir`, the restore's dependencies are read. Shared by a
 * template built from a spec and one made from a running VM (`extra`: what only that adds).
 */
export async function frozenRecord(
  host: QemuHost,
  o: {
    name: string;
    spec: TemplateRecord['spec'];
    /** The parsed spec the VM's boot files come from. */
    bootSpec: VmSpec;
    setup: string[][];
    launch: Parameters<typeof depsOf>[0] & { qemuBinary?: string | undefined; arch: string };
    vm: VmRecord;
    dir: string;
    state: string;
    stateBytes: number;
    started: number;
    extra?: Partial<TemplateRecord>;
  },
): Promise<TemplateRecord> {
  const disks = await freezeDisks(o.vm, o.dir);
  const seed = await freezeSeed(o.vm, o.dir);
  await makeBlanks(host, o.dir, disks);
  return {
    version: 1,
    name: o.name,
    createdAt: new Date().toISOString(),
    spec: o.spec,
    setup: o.setup,
    deps: depsOf(
      o.launch,
      await qemuVersion(host.runner, o.launch.qemuBinary ?? `qemu-system-${o.launch.arch}`),
      await bootIdentity(bootFilesOf(o.bootSpec, o.vm.boot)),
    ),
    boot: o.vm.boot.kind === 'kernel' ? o.vm.boot : { ...o.vm.boot, image: join(o.dir, 'root.qcow2'), format: 'qcow2' },
    disks,
    stateBytes: o.stateBytes,
    stateSha256: await fileSha256(o.state),
    createMs: Math.round(performance.now() - o.started),
    ...o.extra,
    ...seed,
  };
}

/**
 * Makes the blank images a clone copies instead of running qemu-img (store.ts's blankPath):
 * an empty vmstate disk, and an empty overlay on each frozen disk. Mode 0600: a copy keeps
 * the mode, and the clone's QEMU writes its copy.
 */
async function makeBlanks(host: QemuHost, dir: string, disks: TemplateRecord['disks']): Promise<void> {
  const tp = { blank: join(dir, 'blank') };
  await mkdir(tp.blank, { mode: 0o700 });
  const img = (c: ReturnType<typeof qemuImg.create>) => runChecked(host.runner, c, { timeoutMs: 60_000 });
  await img(qemuImg.create({ path: blankPath(tp, 'state.qcow2'), format: 'qcow2', size: STATE_DISK_BYTES }));
  for (const d of disks)
    await img(
      qemuImg.create({
        path: blankPath(tp, basename(d.path)),
        format: 'qcow2',
        backing: { path: d.path, format: 'qcow2' },
      }),
    );
}

/** Moves the build VM's disks into the template directory as read-only files (the clones' backing files). */
export async function freezeDisks(record: VmRecord, dir: string): Promise<TemplateRecord['disks']> {
  const disks: TemplateRecord['disks'] = [];
  const move = async (id: string, from: string, file: string) => {
    const to = join(dir, file);
    await rename(from, to);
    await chmod(to, 0o400);
    disks.push({ id, path: to, format: 'qcow2' });
  };
  if (record.boot.kind === 'disk') await move('root', record.boot.image, 'root.qcow2');
  for (const d of record.disks) await move(d.id, d.path, basename(d.path));
  return disks;
}
