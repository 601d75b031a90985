/**
 * Extra disks of libvirt VMs: qcow2 volumes `<vm>.disk-<name>.qcow2` in the pool, attached
 * with attach-device (`--live` too when the VM runs, so the guest sees it at once) and
 * detached before their volume is deleted.
 */
import type { DiskCapable, DiskInfo } from '../../backend.js';
import { LocalVmError } from '../../errors.js';
import { diskTarget } from './domainXml.js';
import type { LibvirtHost } from './host.js';
import { observePool } from './observe.js';
import { parseDomainDisks, parseVolList } from './parse.js';
import { diskDeviceXml } from './plan.js';
import { POOL } from './target.js';
import { diskPart, vmVolume, volumeXml } from './volumes.js';

const PREFIX = 'disk-';

export function createDiskOps(locate: (name: string) => Promise<LibvirtHost>): DiskCapable {
  async function look(host: LibvirtHost, name: string) {
    const running = (await host.domstate(name)).state === 'running';
    const live = parseDomainDisks(await host.virshOut(host.virsh.dumpxml(name), { vm: name }));
    const config = parseDomainDisks(await host.virshOut(host.virsh.dumpxml(name, { inactive: true }), { vm: name }));
    return { running, live, config };
  }

  async function list(host: LibvirtHost, name: string): Promise<DiskInfo[]> {
    const { running, live } = await look(host, name);
    const vols = parseVolList(await host.virshOut(host.virsh.volList(POOL)));
    const own = `${name}.${PREFIX}`;
    return Promise.all(
      vols
        .filter((v) => v.name.startsWith(own) && v.name.endsWith('.qcow2'))
        .map(async (v) => {
          const info = await host.virshOut(host.virsh.volInfo(POOL, v.name));
          const capacity = /Capacity:\s+(\d+)/.exec(info)?.[1];
          return {
            name: v.name.slice(own.length, -'.qcow2'.length),
            sizeBytes: Number(capacity ?? 0),
            path: v.path,
            attached: running && live.some((d) => d.volume === v.name),
          };
        }),
    );
  }

  return {
    async diskAdd(name, disk) {
      const host = await locate(name);
      const volume = vmVolume(name, diskPart(disk.name));
      if ((await observePool(host, false)).volumes.includes(volume)) {
        throw new LocalVmError('ALREADY_EXISTS', `${name} already has a disk named ${disk.name}`, { vm: name });
      }
      const { running, live, config } = await look(host, name);
      const used = new Set([...live, ...config].map((d) => d.target));
      let index = 0;
      while (used.has(diskTarget(index))) index++;
      const xml = volumeXml({ name: volume, capacityBytes: disk.size, format: 'qcow2' });
      await host.withFile(xml, (file) => host.virshOut(host.virsh.volCreate(POOL, file), { vm: name }));
      try {
        await host.withFile(diskDeviceXml(POOL, volume, diskTarget(index)), (file) =>
          host.virshOut(host.virsh.attachDevice(name, file, running), { vm: name }),
        );
      } catch (error) {
        await host.run(host.virsh.volDelete(POOL, volume));
        throw error;
      }
      const found = (await list(host, name)).find((d) => d.name === disk.name);
      if (!found) throw new LocalVmError('INTERNAL', `disk ${disk.name} of ${name} vanished after it was added`);
      return found;
    },

    async diskRemove(name, diskName) {
      const host = await locate(name);
      const volume = vmVolume(name, diskPart(diskName));
      if (!(await observePool(host, false)).volumes.includes(volume)) return { removed: false };
      const { running, live, config } = await look(host, name);
      const target = [...live, ...config].find((d) => d.volume === volume)?.target;
      if (target) {
        const liveToo = running && live.some((d) => d.volume === volume);
        await host.withFile(diskDeviceXml(POOL, volume, target), (file) =>
          host.virshOut(host.virsh.detachDevice(name, file, liveToo), { vm: name }),
        );
      }
      await host.virshOut(host.virsh.volDelete(POOL, volume), { vm: name });
      return { removed: true };
    },

    async diskList(name) {
      return list(await locate(name), name);
    },
  };
}
