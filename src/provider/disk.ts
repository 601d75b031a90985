/**
 * The I/O half of the `Disk` and `DiskAttachment` resources, called by the serialized
 * providers (providers.ts) inside the provider host. Ordering is Pulumi's: an attachment
 * takes the Disk's and the Vm's outputs (`disk: disk.name`, `vm: vm.name`), so it is created
 * after both and deleted before either; a Disk delete that still finds it attached is
 * refused with CONFLICT saying how to wire it.
 */
import { LocalVmError, isLocalVmError, unlessNotFound } from '../errors.js';
import {
  attachDisk,
  createDisk,
  deleteDisk,
  detachDisk,
  diskInfo,
  resizeDisk,
  type StandaloneDiskInfo,
} from '../operations/standaloneDisk.js';
import {
  attachmentId,
  attachmentInputsOf,
  checkAttachment,
  checkDisk,
  diffAttachment,
  diffDisk,
  diskInputsOf,
} from './diskLogic.js';
import { plain, type Props } from './props.js';
import {
  guarded,
  observeVm,
  toCheckReply,
  toDiffReply,
  warn,
  type CheckReply,
  type Ctx,
  type CreateReply,
  type DiffReply,
  type ReadReply,
  type UpdateReply,
} from './shared.js';

function diskOuts(inputs: Props, info: StandaloneDiskInfo): Props {
  return plain({
    ...inputs,
    name: info.name,
    size: info.sizeBytes,
    sizeBytes: info.sizeBytes,
    allocatedBytes: info.allocatedBytes,
    format: info.format,
    path: info.path,
    createdAt: info.createdAt,
  });
}

async function findDisk(name: string, ctx: Ctx): Promise<StandaloneDiskInfo | undefined> {
  return unlessNotFound(diskInfo(name, ctx));
}

export async function diskCheck(olds: Props, news: Props): Promise<CheckReply> {
  return toCheckReply(checkDisk(olds, news));
}

export async function diskDiff(_id: string, olds: Props, news: Props): Promise<DiffReply> {
  return toDiffReply(diffDisk(olds, news), ['name', 'path', 'createdAt']);
}

export async function diskCreate(inputs: Props, ctx?: Ctx): Promise<CreateReply> {
  return guarded(async () => {
    const d = diskInputsOf(inputs);
    try {
      const info = await createDisk(d.name, d.size, { from: d.from }, ctx);
      return { id: d.name, outs: diskOuts(inputs, info) };
    } catch (error) {
      if (!isLocalVmError(error, 'ALREADY_EXISTS')) throw error;
      throw new LocalVmError('ALREADY_EXISTS', `disk ${d.name} exists already`, {
        hint:
          'another stack, or `localvm disk create`, made a disk of that name: choose another name, ' +
          `or delete it first (localvm disk delete ${d.name})`,
        cause: error,
      });
    }
  });
}

/** `read` for Disk (refresh): a disk deleted out of band returns no id; a resize out of band shows as its size. */
export async function diskRead(id: string, props: Props, ctx?: Ctx): Promise<ReadReply> {
  return guarded(async () => {
    const info = await findDisk(id, ctx);
    if (!info) return {};
    if (typeof props.createdAt === 'string' && info.createdAt !== props.createdAt) return {};
    return { id, props: diskOuts(props, info) };
  });
}

/** `update` for Disk: a larger size grows it (online when attached to a running VM). */
export async function diskUpdate(id: string, _olds: Props, news: Props, ctx?: Ctx): Promise<UpdateReply> {
  return guarded(async () => {
    const d = diskInputsOf(news);
    return { outs: diskOuts(news, await resizeDisk(id, d.size, ctx)) };
  });
}

/**
 * `delete` for Disk. Idempotent; a disk created again under the name since (another
 * `createdAt`) is not ours and is left. CONFLICT while attached, naming the VMs.
 */
export async function diskDelete(id: string, props: Props, ctx?: Ctx): Promise<void> {
  return guarded(async () => {
    const current = await findDisk(id, ctx);
    if (!current) return;
    if (typeof props.createdAt === 'string' && current.createdAt !== props.createdAt) {
      warn(`left disk ${id} in place: it was created again at ${current.createdAt}, after this resource made it`);
      return;
    }
    try {
      await deleteDisk(id, ctx);
    } catch (error) {
      if (!isLocalVmError(error, 'CONFLICT')) throw error;
      throw new LocalVmError('CONFLICT', error.message, {
        hint:
          `${error.hint ?? 'detach it first'}; in a Pulumi program give each DiskAttachment the Disk's output ` +
          '(`disk: disk.name`), so Pulumi deletes the attachments before the disk',
        details: error.details,
        cause: error,
      });
    }
  });
}

export async function diskAttachmentCheck(_olds: Props, news: Props): Promise<CheckReply> {
  return toCheckReply(checkAttachment(news));
}

export async function diskAttachmentDiff(_id: string, olds: Props, news: Props): Promise<DiffReply> {
  return toDiffReply(diffAttachment(olds, news), ['vm', 'disk', 'readonly']);
}

export async function diskAttachmentCreate(inputs: Props, ctx?: Ctx): Promise<CreateReply> {
  return guarded(async () => {
    const a = attachmentInputsOf(inputs);
    await attachDisk(a.vm, a.disk, { readonly: a.readonly }, ctx);
    const vm = await observeVm(a.vm, ctx);
    return { id: attachmentId(a), outs: plain({ ...inputs, readonly: a.readonly, instance: vm?.createdAt }) };
  });
}

/**
 * `read` for DiskAttachment (refresh): gone when the disk is, when it is no longer attached
 * to the VM that way, or when the VM is another instance than the one it was attached to.
 */
export async function diskAttachmentRead(id: string, props: Props, ctx?: Ctx): Promise<ReadReply> {
  return guarded(async () => {
    const a = attachmentInputsOf(props);
    const info = await findDisk(a.disk, ctx);
    const mine = info?.attachedTo.find((t) => t.vm === a.vm && t.readonly === a.readonly);
    if (!mine) return {};
    const vm = await observeVm(a.vm, ctx);
    if (!vm || (typeof props.instance === 'string' && vm.createdAt !== props.instance)) return {};
    return { id, props: plain({ ...props, instance: vm.createdAt }) };
  });
}

export async function diskAttachmentUpdate(_id: string, _olds: Props, news: Props): Promise<UpdateReply> {
  return { outs: plain(news) };
}

/** `delete` for DiskAttachment: detaches (waiting for the guest); a VM or disk already gone is success. */
export async function diskAttachmentDelete(_id: string, props: Props, ctx?: Ctx): Promise<void> {
  return guarded(async () => {
    const a = attachmentInputsOf(props);
    try {
      await detachDisk(a.vm, a.disk, { timeoutMs: a.timeoutMs }, ctx);
    } catch (error) {
      if (!isLocalVmError(error, 'NOT_FOUND')) throw error;
    }
  });
}
