/**
 * The libvirt backend: VMs are libvirt domains, driven by `virsh -c URI` through the runner.
 * libvirt is the truth (state, definition, localvm's metadata); nothing is recorded locally.
 * Every state change is planned from observations (plan.ts) and then applied (apply.ts).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend, DiskCapable, SnapshotCapable, VmInfo } from '../../backend.js';
import type { BackendHost } from '../registry.js';
import { isLocalVmError, LocalVmError, tail } from '../../errors.js';
import type { PlanRequest } from '../../plan.js';
import { DEFAULT_TIMEOUTS, specFingerprint, type VmSpec } from '../../schema.js';
import { applySteps, undoCreate, type ApplyContext } from './apply.js';
import { createDiskOps } from './disks.js';
import { libvirtAgentTransport } from './guest.js';
import { createLibvirtHost, type LibvirtHost } from './host.js';
import { metadataNode, withMetadata } from './metadata.js';
import { domainInfo, observeCreate, observeDomain } from './observe.js';
import { parseNames, parseSnapshotList } from './parse.js';
import { planCreate, planDownloadFirst, planExisting, type LvPlan } from './plan.js';
import { urlImage } from './urlImage.js';
import { LIBVIRT_BACKEND } from './register.js';
import { locateTarget, POOL, resolveTarget, targets, type LibvirtTarget } from './target.js';
import { answered, fanOut, unanswered } from '../../hosts/fanout.js';

/** How long one host may take to list its VMs (a virsh call per domain, over SSH for remote hosts). */
const HOST_LIST_MS = 120_000;
import { vmVolume } from './volumes.js';

export type LibvirtBackend = Backend & SnapshotCapable & DiskCapable;

/** Creates the libvirt backend over every configured target (see target.ts). */
export function createLibvirtBackend(options: BackendHost): LibvirtBackend {
  const { config, runner } = options;
  const log = options.log ?? (() => {});
  const hosts = new Map<string, LibvirtHost>();
  const hostFor = (target: LibvirtTarget): LibvirtHost => {
    let h = hosts.get(target.uri);
    if (!h) {
      h = createLibvirtHost({ config, runner, target, log, clock: options.clock });
      hosts.set(target.uri, h);
    }
    return h;
  };
  const ctx = { config, runner };

  /** The host holding domain `name` (target.ts locateTarget: every host asked at once). */
  async function locate(name: string): Promise<LibvirtHost> {
    const has = async (t: LibvirtTarget) => {
      try {
        await hostFor(t).domstate(name);
        return true;
      } catch (error) {
        if (isLocalVmError(error, 'NOT_FOUND')) return false;
        throw error;
      }
    };
    return hostFor(await locateTarget(name, ctx, has));
  }

  async function info(name: string): Promise<VmInfo> {
    return domainInfo(await locate(name), name);
  }

  /** `download`: a real create pulls a URL image first; a dry run (plan) never downloads. */
  async function planFor(request: PlanRequest, download = false): Promise<{ host: LibvirtHost; plan: LvPlan }> {
    if (request.operation === 'create') {
      const host = hostFor(await resolveTarget(request.spec, ctx));
      const image = await urlImage(request.spec, host.config, download);
      if (image && 'pending' in image) {
        return { host, plan: planDownloadFirst(request.spec, image.pending, host.target.host) };
      }
      const observed = await observeCreate(host, request.spec, runner, image?.path);
      return { host, plan: planCreate(host.virsh, request.spec, observed) };
    }
    const name = request.name;
    const host = await locate(name).catch((error: unknown) => {
      if (isLocalVmError(error, 'NOT_FOUND')) return targets(ctx).then((t) => hostFor(t[0] as LibvirtTarget));
      throw error;
    });
    const observed = await observeDomain(host, name, request.operation === 'delete');
    const meta = observed.state !== undefined ? await host.metadata(name).catch(() => undefined) : undefined;
    // A domain this home did not make (someone's own VM, another home's) is never started,
    // stopped or undefined by it: as far as this home knows, there is no such VM.
    if (observed.state !== undefined && meta === undefined) {
      throw new LocalVmError(
        'NOT_FOUND',
        `domain ${name} on ${host.target.host} was not made by localvm from this home (${ctx.config.stateDir}): localvm leaves it alone`,
        { vm: name },
      );
    }
    const timeoutMs =
      (request.operation === 'stop' ? request.timeoutMs : undefined) ??
      meta?.spec.timeouts?.stopMs ??
      DEFAULT_TIMEOUTS.stopMs;
    const force = request.operation === 'stop' ? request.force : undefined;
    return { host, plan: planExisting(host.virsh, request.operation, name, observed, { force, timeoutMs }) };
  }

  async function apply(host: LibvirtHost, plan: LvPlan): Promise<void> {
    const actx: ApplyContext = { host, runner, vm: plan.vm, created: [] };
    await applySteps(actx, plan.steps);
  }

  async function existing(request: Exclude<PlanRequest, { operation: 'create' }>): Promise<VmInfo> {
    const { host, plan } = await planFor(request);
    if (plan.steps.length === 1 && plan.steps[0]?.summary.endsWith('does not exist')) {
      throw new LocalVmError('NOT_FOUND', `no libvirt VM named ${request.name}`, { vm: request.name });
    }
    await apply(host, plan);
    return domainInfo(host, request.name);
  }

  // Where each VM's guest was last found: a domain does not move between hosts, and every
  // virsh round trip saved is tens of milliseconds on each exec. A VM deleted meanwhile makes
  // the agent command fail NOT_FOUND, which is what the caller should see anyway.
  const guestHosts = new Map<string, LibvirtHost>();
  const guest = (name: string) => {
    const find = async () => {
      const known = guestHosts.get(name);
      if (known) return known;
      const host = await locate(name);
      guestHosts.set(name, host);
      return host;
    };
    return libvirtAgentTransport(find, name, async () => {
      const meta = await (await find()).metadata(name);
      return meta?.spec.timeouts?.execMs ?? DEFAULT_TIMEOUTS.execMs;
    });
  };

  const backend: LibvirtBackend = {
    name: LIBVIRT_BACKEND,
    async plan(request) {
      return (await planFor(request)).plan;
    },
    guest,
    matchesSpec: (existingVm, spec) => existingVm.fingerprint === specFingerprint(spec),

    async create(spec: VmSpec) {
      const { host, plan } = await planFor({ operation: 'create', spec }, true);
      const actx: ApplyContext = { host, runner, vm: spec.name, created: [] };
      try {
        await applySteps(actx, plan.steps);
      } catch (error) {
        await undoCreate(host, spec.name, actx.created);
        throw error;
      }
      return domainInfo(host, spec.name);
    },
    start: (name) => existing({ operation: 'start', name }),
    stop: (name, o = {}) => existing({ operation: 'stop', name, force: o.force, timeoutMs: o.timeoutMs }),
    restart: (name) => existing({ operation: 'restart', name }),

    async delete(name) {
      guestHosts.delete(name);
      const { host, plan } = await planFor({ operation: 'delete', name });
      await apply(host, plan);
    },

    async listByHost() {
      const listHost = async (t: LibvirtTarget) => {
        const host = hostFor(t);
        const out: VmInfo[] = [];
        for (const name of parseNames(await host.virshOut(host.virsh.listNames()))) {
          try {
            out.push(await domainInfo(host, name));
          } catch (error) {
            if (!isLocalVmError(error, 'NOT_FOUND')) throw error; // not localvm's, or gone meanwhile
          }
        }
        return out;
      };
      return fanOut(await targets(ctx), listHost, { timeoutMs: HOST_LIST_MS });
    },

    async list() {
      // One host that does not answer must not hide the others (nor break `localvm list`).
      const results = await backend.listByHost!();
      for (const u of unanswered(results)) log(u.error.message);
      return answered(results);
    },

    async info(name) {
      return info(name);
    },

    async consoleTail(name, lines = 20) {
      const host = await locate(name);
      await host.run(host.virsh.poolRefresh(POOL));
      const dir = await mkdtemp(join(tmpdir(), 'localvm-console-'));
      try {
        const file = join(dir, 'console.log');
        const r = await host.run(host.virsh.volDownload(POOL, vmVolume(name, 'console.log'), file));
        if (r.exitCode !== 0) return '';
        return tail((await readFile(file, 'utf8')).replace(/\r/g, ''), lines, 16_000);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },

    /** Labels only: they live in the metadata; the machine itself is not changed here. */
    async update(name, spec) {
      const host = await locate(name);
      const current = await domainInfo(host, name);
      if (current.fingerprint !== specFingerprint(spec)) {
        throw new LocalVmError(
          'UNSUPPORTED',
          `changing cpus, memory, ports or disks of libvirt VM ${name} is not supported`,
          {
            vm: name,
            hint: 'delete and create it again, or change only labels',
          },
        );
      }
      const xml = await host.virshOut(host.virsh.dumpxml(name, { inactive: true }), { vm: name });
      const node = metadataNode({
        fingerprint: current.fingerprint ?? specFingerprint(spec),
        owner: (await host.metadata(name))?.owner ?? '',
        home: host.home,
        createdAt: current.createdAt ?? '',
        labels: spec.labels,
        spec: { ...(current.spec as VmSpec), labels: spec.labels },
      });
      await host.withFile(withMetadata(xml, node), (file) => host.virshOut(host.virsh.define(file), { vm: name }));
      return domainInfo(host, name);
    },

    async snapshotCreate(name, snapshot) {
      const host = await locate(name);
      await host.virshOut(host.virsh.snapshotCreate(name, snapshot), { vm: name, timeoutMs: 300_000 });
    },
    async snapshotList(name) {
      const host = await locate(name);
      return parseSnapshotList(await host.virshOut(host.virsh.snapshotList(name), { vm: name }));
    },
    async snapshotRestore(name, snapshot) {
      const host = await locate(name);
      await host.virshOut(host.virsh.snapshotRevert(name, snapshot), { vm: name, timeoutMs: 300_000 });
    },
    async snapshotDelete(name, snapshot) {
      const host = await locate(name);
      await host.virshOut(host.virsh.snapshotDelete(name, snapshot), { vm: name, timeoutMs: 300_000 });
    },

    ...createDiskOps(locate),
  };
  return backend;
}
