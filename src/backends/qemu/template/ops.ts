/**
 * Templates as a capability of the QEMU backend: create, list, info, delete. Deleting is
 * refused while a clone exists, since every clone maps the template's RAM file and stands
 * on its disks.
 */
import { rm } from 'node:fs/promises';
import { LocalVmError } from '../../../errors.js';
import type { VmSpec } from '../../../schema.js';
import type { QemuHost } from '../host.js';
import { createTemplate } from './create.js';
import { createTemplateFromVm } from './fromVm.js';
import {
  clonesOf,
  listTemplateNames,
  readTemplate,
  sizeOnDisk,
  templateLockName,
  templatePaths,
  type TemplateRecord,
} from './store.js';

/** A template as listed. */
export interface TemplateInfo {
  name: string;
  createdAt: string;
  /** Bytes allocated on disk (RAM file, device state, frozen disks). */
  sizeBytes: number;
  qemuVersion: string;
  memory: number;
  image: string;
  /** The spec it was booted from, and the setup commands run before freezing. */
  spec: VmSpec;
  setup: string[][];
  /** VMs restored from it. */
  clones: string[];
  /** The VM it was frozen from (`--from`); absent when booted from `spec`. */
  from?: string | undefined;
  createMs: number;
  stateBytes: number;
  dir: string;
  /**
   * How its clones get their clock, hostname and MAC: `helper`, through the helper parked in
   * the template (no guest process at restore: fastest), or `agent`, one guest-exec (a template
   * frozen from a running VM, or one whose guest could not park the helper).
   */
  identity: 'helper' | 'agent';
  /** Which helper is parked (identity `helper`): the static program (identity.c) or the shell script. */
  helper?: 'program' | 'shell';
}

export interface TemplateCapable {
  templateCreate(input: { name: string; spec: VmSpec; setup: string[][] }): Promise<TemplateInfo>;
  /** Freezes running VM `from` as template `name`; the VM continues as the template's clone. */
  templateCreateFrom?(input: { name: string; from: string; setup: string[][] }): Promise<TemplateInfo>;
  templateList(): Promise<TemplateInfo[]>;
  templateInfo(name: string): Promise<TemplateInfo>;
  templateDelete(name: string): Promise<{ deleted: boolean }>;
}

export function createTemplateOps(host: QemuHost): TemplateCapable {
  const stateDir = host.config.stateDir;
  const describe = async (t: TemplateRecord): Promise<TemplateInfo> => {
    const dir = templatePaths(stateDir, t.name).dir;
    return {
      name: t.name,
      createdAt: t.createdAt,
      sizeBytes: await sizeOnDisk(dir),
      qemuVersion: t.deps.qemuVersion,
      memory: t.deps.memory,
      image: t.spec.image,
      spec: t.spec,
      setup: t.setup,
      clones: await clonesOf(stateDir, t.name),
      ...(t.from !== undefined ? { from: t.from } : {}),
      createMs: t.createMs,
      stateBytes: t.stateBytes,
      dir,
      identity: t.identityHelper ? 'helper' : 'agent',
      ...(t.identityHelper ? { helper: t.identityProgram ? ('program' as const) : ('shell' as const) } : {}),
    };
  };
  return {
    async templateCreate(input) {
      return describe(await createTemplate(host, input));
    },
    async templateCreateFrom(input) {
      return describe(await createTemplateFromVm(host, input));
    },
    async templateList() {
      const out: TemplateInfo[] = [];
      for (const name of await listTemplateNames(stateDir)) {
        const t = await readTemplate(stateDir, name).catch(() => undefined);
        if (t) out.push(await describe(t));
      }
      return out;
    },
    async templateInfo(name) {
      return describe(await readTemplate(stateDir, name));
    },
    async templateDelete(name) {
      return host.lifecycle(templateLockName(name), 'template delete', async () => {
        const p = templatePaths(stateDir, name);
        const clones = await clonesOf(stateDir, name);
        if (clones.length > 0) {
          throw new LocalVmError(
            'CONFLICT',
            `template ${name} is used by ${clones.length} clone(s): ${clones.join(', ')}`,
            {
              hint: `each clone maps the template's RAM file and stands on its disks: delete them first (localvm delete ${clones.join(' ')})`,
              details: { template: name, clones },
            },
          );
        }
        const there = await readTemplate(stateDir, name).then(
          () => true,
          () => false,
        );
        await rm(p.dir, { recursive: true, force: true });
        return { deleted: there };
      });
    },
  };
}
