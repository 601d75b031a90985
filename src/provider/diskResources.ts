/**
 * The Pulumi resources for standalone disks (QEMU): `Disk` and `DiskAttachment`, dynamic
 * resources whose provider objects (providers.ts) run inside Pulumi's dynamic-provider host.
 */
import * as pulumi from '@pulumi/pulumi';
import { diskAttachmentProvider, diskProvider } from './providers.js';
import { PROVIDER_VERSION } from './resources.js';

type In<T> = pulumi.Input<T>;

export interface DiskResourceArgs {
  /** The disk's name (a-z, 0-9, "-"); defaults to the resource name. */
  name?: In<string>;
  /** Bytes, or `512M`, `10G`. Growing it resizes the disk in place (online when attached); it never shrinks. */
  size: In<number | string>;
  /** A disk image on the host copied into the new disk (it must fit in `size`). Changing it replaces the disk. */
  from?: In<string>;
}

/**
 * A standalone qcow2 disk (`localvm disk create`) that outlives the VMs it is attached to.
 * A new name or `from` replaces it; a larger `size` grows it in place. Deleting it while a
 * VM has it attached fails with CONFLICT: attach it with a `DiskAttachment` given this
 * resource's output (`disk: disk.name`), so Pulumi detaches before it deletes.
 */
export class Disk extends pulumi.dynamic.Resource {
  declare readonly name: pulumi.Output<string>;
  /** Bytes (the input, parsed). */
  declare readonly size: pulumi.Output<number>;
  declare readonly sizeBytes: pulumi.Output<number>;
  /** Bytes the image file takes on the host (at the last create, update or refresh). */
  declare readonly allocatedBytes: pulumi.Output<number>;
  declare readonly format: pulumi.Output<string>;
  declare readonly path: pulumi.Output<string>;
  declare readonly createdAt: pulumi.Output<string>;
  declare readonly providerVersion: pulumi.Output<string>;

  constructor(name: string, args: DiskResourceArgs, opts: pulumi.CustomResourceOptions = {}) {
    super(
      diskProvider,
      name,
      {
        ...args,
        name: args.name ?? name,
        providerVersion: PROVIDER_VERSION,
        sizeBytes: undefined,
        allocatedBytes: undefined,
        format: undefined,
        path: undefined,
        createdAt: undefined,
      },
      opts,
      'localvm',
      'Disk',
    );
  }
}

export interface DiskAttachmentArgs {
  /** The VM; pass `vm.name` so the attachment depends on the VM. */
  vm: In<string>;
  /** The disk; pass `disk.name` so the attachment depends on the Disk. */
  disk: In<string>;
  /** Read-only (several VMs may share a disk read-only; read-write is one VM at a time). */
  readonly?: In<boolean>;
  /** How long a detach waits for the guest to let go of the device (default 10 s). */
  timeoutMs?: In<number>;
}

/**
 * A standalone disk attached to a VM: hot-plugged when the VM runs, kept across restarts.
 * Any change of vm, disk or readonly replaces it, detaching first. A refresh drops it when
 * the disk was detached or deleted out of band, or the VM is another instance.
 */
export class DiskAttachment extends pulumi.dynamic.Resource {
  declare readonly vm: pulumi.Output<string>;
  declare readonly disk: pulumi.Output<string>;
  declare readonly readonly: pulumi.Output<boolean>;
  /** The `createdAt` of the VM it was attached to. */
  declare readonly instance: pulumi.Output<string>;
  declare readonly providerVersion: pulumi.Output<string>;

  constructor(name: string, args: DiskAttachmentArgs, opts: pulumi.CustomResourceOptions = {}) {
    super(
      diskAttachmentProvider,
      name,
      { ...args, providerVersion: PROVIDER_VERSION, instance: undefined },
      opts,
      'localvm',
      'DiskAttachment',
    );
  }
}
