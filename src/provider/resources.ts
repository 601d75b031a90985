/**
 * The Pulumi resources of localvm: `Vm`, `VmCommand`, `VmFile` and `Template`, dynamic resources whose
 * provider objects (providers.ts) run inside Pulumi's dynamic-provider host.
 */
import { readFileSync } from 'node:fs';
import * as pulumi from '@pulumi/pulumi';
import type { Accel, Arch, BackendName } from '../schema.js';
import { templateProvider, vmCommandProvider, vmFileProvider, vmProvider } from './providers.js';

/** This package's version; stored as an input so a provider upgrade registers as an update. */
export const PROVIDER_VERSION: string = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

/** Pulumi module of the resource types: `pulumi-nodejs:dynamic/localvm:Vm`. */
const MODULE = 'localvm';

type In<T> = pulumi.Input<T>;

export interface PortForwardArgs {
  host: In<number>;
  guest: In<number>;
  protocol?: In<'tcp' | 'udp'>;
  bind?: In<string>;
}

export interface DiskArgs {
  name: In<string>;
  size: In<number | string>;
}

export interface ProbeArgs {
  argv: In<In<string>[]>;
  timeoutMs?: In<number>;
}

export interface TimeoutsArgs {
  createMs?: In<number>;
  readyMs?: In<number>;
  stopMs?: In<number>;
  execMs?: In<number>;
}

/** Inputs of a Vm: the VM spec (see `vmSpecSchema`). `name` defaults to the resource name. */
export interface VmArgs {
  name?: In<string>;
  backend?: In<BackendName>;
  /**
   * libvirt: the host from the hosts list to run on, or `auto` (the one with the most free
   * memory that fits). Changing it replaces the VM.
   */
  host?: In<string>;
  /** libvirt: the connection URI to run on (instead of `host`), e.g. `qemu+ssh://user@box/system`. Changing it replaces the VM. */
  connect?: In<string>;
  image?: In<string>;
  /** With an image URL: `sha256:<hex>` (or sha512) the download is verified against. */
  imageChecksum?: In<string>;
  /** With an image URL, instead of imageChecksum: a SHA256SUMS/SHA512SUMS URL listing the image. */
  imageChecksumUrl?: In<string>;
  kernel?: In<string>;
  initrd?: In<string>;
  append?: In<string>;
  arch?: In<Arch | 'amd64' | 'arm64'>;
  accel?: In<Accel>;
  cpus?: In<number>;
  /** MiB. */
  memory?: In<number>;
  diskSize?: In<number | string>;
  disks?: In<In<DiskArgs>[]>;
  user?: In<string>;
  /** cloud-init user-data; always a secret in the outputs. */
  userData?: In<string>;
  /**
   * Restore this template instead of booting: a clone in a fraction of a boot. Pass a
   * `Template` resource's output (`template: tpl.name`) so Pulumi creates the template first
   * and deletes the clone first. Not with image, kernel, initrd, append or userData (the
   * clone runs the template's guest); cpus and memory default to the template's. Changing it
   * replaces the VM.
   */
  template?: In<string>;
  ports?: In<In<PortForwardArgs>[]>;
  isolated?: In<boolean>;
  /** How localvm reaches the guest (QEMU): `agent`, `ssh`, or `auto` (the first to answer). Changing it replaces the VM. */
  transport?: In<'auto' | 'agent' | 'ssh'>;
  labels?: In<Record<string, In<string>>>;
  /** Commands that must exit 0 in the guest before the VM counts as created. */
  readiness?: In<In<ProbeArgs>[]>;
  timeouts?: In<TimeoutsArgs>;
  /**
   * Keep the VM running (the default): `up` starts a VM found stopped, e.g. after a refresh.
   * `false` keeps it stopped.
   */
  running?: In<boolean>;
  /**
   * Take over a VM of this name that another Pulumi resource owns (another stack, or this
   * resource before a rename without an alias). Without it, that create fails with CONFLICT.
   */
  adopt?: In<boolean>;
}

/**
 * A local virtual machine. Changing its identity (image, disks, ...) replaces it, deleting
 * first; a new name creates the new VM first. cpus, memory and ports update in place by
 * restarting it, which loses whatever lived only in the guest (the diff warns). The VM's
 * labels record which resource owns it (`<project>/<stack>/<resource name>`).
 */
export class Vm extends pulumi.dynamic.Resource {
  declare readonly name: pulumi.Output<string>;
  /** The backend the VM runs on (`qemu`, `orbstack`), whatever the input said. */
  declare readonly backend: pulumi.Output<string>;
  declare readonly state: pulumi.Output<string>;
  /** The accelerator in use (`tcg`, `kvm`, `hvf`). */
  declare readonly accel: pulumi.Output<string>;
  declare readonly ip4: pulumi.Output<string | undefined>;
  declare readonly ports: pulumi.Output<{ host: number; guest: number; protocol: string; bind: string }[]>;
  /** The image input; undefined for a clone (it runs its template's). */
  declare readonly image: pulumi.Output<string | undefined>;
  declare readonly template: pulumi.Output<string | undefined>;
  declare readonly cpus: pulumi.Output<number>;
  declare readonly memory: pulumi.Output<number>;
  declare readonly labels: pulumi.Output<Record<string, string>>;
  declare readonly fingerprint: pulumi.Output<string>;
  declare readonly userData: pulumi.Output<string | undefined>;
  declare readonly owner: pulumi.Output<string>;
  /** When this instance of the VM was created: another VM under the same name differs. */
  declare readonly createdAt: pulumi.Output<string>;
  /** When the VM last booted; changes on every restart (pass it in a VmCommand's triggers to re-run on one). */
  declare readonly bootedAt: pulumi.Output<string | undefined>;
  declare readonly providerVersion: pulumi.Output<string>;

  constructor(name: string, args: VmArgs = {}, opts: pulumi.CustomResourceOptions = {}) {
    super(
      vmProvider,
      name,
      {
        ...args,
        name: args.name ?? name,
        providerVersion: PROVIDER_VERSION,
        // The dynamic provider never learns the URN: the owner is spelled out as an input.
        owner: `${pulumi.getProject()}/${pulumi.getStack()}/${name}`,
        // Output-only properties must be named for Pulumi to expose them.
        state: undefined,
        ip4: undefined,
        fingerprint: undefined,
        createdAt: undefined,
        bootedAt: undefined,
        backend: args.backend,
        accel: args.accel,
        ports: args.ports,
        cpus: args.cpus,
        memory: args.memory,
        image: args.image,
        labels: args.labels,
        userData: args.userData,
      },
      { ...opts, additionalSecretOutputs: [...new Set(['userData', ...(opts.additionalSecretOutputs ?? [])])] },
      MODULE,
      'Vm',
    );
  }
}

/** An argv array, or a string run as a shell script (`/bin/sh -c`). */
export type CommandArg = In<In<string>[]> | In<string>;

export interface VmCommandArgs {
  /** The VM's name; pass `vm.name` so the command depends on the VM. */
  vm: In<string>;
  create: CommandArg;
  /** Run when the command, env, stdin or cwd change; defaults to `create`. */
  update?: CommandArg;
  /** Run when the resource is deleted. */
  delete?: CommandArg;
  /** Any change here replaces the resource: the command runs again from scratch. */
  triggers?: In<unknown[]>;
  env?: In<Record<string, In<string>>>;
  stdin?: In<string>;
  cwd?: In<string>;
  /** Keep a non-zero exit instead of failing the resource. */
  allowFailure?: In<boolean>;
  timeoutMs?: In<number>;
  /**
   * On a replace (`triggers` or `vm` changed), run the old `delete` before the new `create`.
   * By default the new `create` runs first and the old `delete` after it, in the same guest.
   */
  deleteBeforeReplace?: In<boolean>;
}

/**
 * A command run inside a VM, like pulumi-command's `Command` but in the guest. It is bound
 * to the VM's boot: after a restart (or a VM recreated under the same name) `up` runs
 * `create` again, and a refresh drops it.
 */
export class VmCommand extends pulumi.dynamic.Resource {
  declare readonly vm: pulumi.Output<string>;
  declare readonly stdout: pulumi.Output<string>;
  declare readonly stderr: pulumi.Output<string>;
  declare readonly exitCode: pulumi.Output<number>;
  declare readonly providerVersion: pulumi.Output<string>;

  constructor(name: string, args: VmCommandArgs, opts: pulumi.CustomResourceOptions = {}) {
    super(
      vmCommandProvider,
      name,
      { ...args, providerVersion: PROVIDER_VERSION, stdout: undefined, stderr: undefined, exitCode: undefined },
      opts,
      MODULE,
      'VmCommand',
    );
  }
}

export interface VmFileArgs {
  vm: In<string>;
  /** Absolute path in the guest. */
  path: In<string>;
  /** The file's text; exactly one of `content` and `source`. */
  content?: In<string>;
  /** A local file, read when the resource is created (relative to the Pulumi project). */
  source?: In<string>;
  /** Unix mode, e.g. 0o644 (the default). */
  mode?: In<number>;
  timeoutMs?: In<number>;
}

/**
 * A file inside a VM. New content (or source bytes) is written in place; another path or
 * VM replaces it. Delete removes it only while it still holds what was written. A refresh
 * drops it when the guest lost it or holds other bytes, so `up` writes it again.
 */
export class VmFile extends pulumi.dynamic.Resource {
  declare readonly vm: pulumi.Output<string>;
  declare readonly path: pulumi.Output<string>;
  declare readonly mode: pulumi.Output<number>;
  declare readonly sha256: pulumi.Output<string>;
  declare readonly providerVersion: pulumi.Output<string>;

  constructor(name: string, args: VmFileArgs, opts: pulumi.CustomResourceOptions = {}) {
    super(
      vmFileProvider,
      name,
      { ...args, providerVersion: PROVIDER_VERSION, sha256: undefined },
      opts,
      MODULE,
      'VmFile',
    );
  }
}

/** The build VM of a Template: the Vm spec fields, without those a build VM cannot have. */
export type TemplateSpecArgs = Omit<VmArgs, 'name' | 'template' | 'running' | 'adopt'>;

export interface TemplateArgs {
  /** The template's name (a-z, 0-9, "-"); defaults to the resource name. */
  name?: In<string>;
  /** The VM booted and frozen (default: the `tiny` guest, 1 CPU, 256 MiB). */
  spec?: In<TemplateSpecArgs>;
  /** Commands (argv arrays) run in the build VM, in order, before it is frozen; each must exit 0. */
  setup?: In<In<In<string>[]>[]>;
}

/**
 * A VM template (QEMU): a VM booted once from `spec`, set up with `setup`, and frozen, so
 * that a `Vm` with `template: tpl.name` restores a ready clone instead of booting. A
 * template is never changed in place: any change of name, spec or setup replaces it (the
 * old one deleted first when the name stays, its clones replaced with it). Deleting it
 * while clones use it fails with CONFLICT; wired through `template: tpl.name`, Pulumi
 * deletes the clones first. Pass secrets (`spec.userData`) as `pulumi.secret`.
 */
export class Template extends pulumi.dynamic.Resource {
  declare readonly name: pulumi.Output<string>;
  declare readonly spec: pulumi.Output<Record<string, unknown>>;
  declare readonly setup: pulumi.Output<string[][]>;
  /** Bytes on disk (RAM file, device state, frozen disks). */
  declare readonly sizeBytes: pulumi.Output<number>;
  /** The QEMU that froze it: clones restore only with the same one. */
  declare readonly qemuVersion: pulumi.Output<string>;
  /** MiB of RAM; every clone has the same. */
  declare readonly memory: pulumi.Output<number>;
  declare readonly createdAt: pulumi.Output<string>;
  declare readonly providerVersion: pulumi.Output<string>;

  constructor(name: string, args: TemplateArgs = {}, opts: pulumi.CustomResourceOptions = {}) {
    super(
      templateProvider,
      name,
      {
        ...args,
        name: args.name ?? name,
        providerVersion: PROVIDER_VERSION,
        sizeBytes: undefined,
        qemuVersion: undefined,
        memory: undefined,
        createdAt: undefined,
      },
      opts,
      MODULE,
      'Template',
    );
  }
}
