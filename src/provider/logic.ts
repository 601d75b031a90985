/**
 * The pure half of the Pulumi provider: input checking and diffing for `Vm` (here) and for
 * `VmCommand` and `VmFile` (guestLogic.ts, re-exported). No I/O, no environment; the
 * provider host calls these through the I/O half (vm.ts, vmCommand.ts, vmFile.ts).
 */
import { z } from 'zod';
import { parseVmSpec, templateDefaults, vmSpecObjectSchema, vmSpecSchema, type VmSpec } from '../schema.js';
import {
  UNKNOWN,
  checkWith,
  containsUnknown,
  sameValue,
  withoutProviderKeys,
  type CheckOutcome,
  type DiffOutcome,
  type Props,
} from './props.js';

export * from './props.js';
export * from './guestLogic.js';
export * from './templateLogic.js';

// --- Vm -------------------------------------------------------------------------------

/**
 * The outputs a Vm adds to its inputs; never part of the spec. `createdAt` and `bootedAt`
 * identify the instance and its boot: a VM recreated under the same name, or restarted,
 * differs in them (dependents compare what they recorded, see vmInstanceDrift).
 */
export const VM_OUTPUT_KEYS = ['state', 'ip4', 'fingerprint', 'createdAt', 'bootedAt'] as const;

/** The label recording which Pulumi resource owns a VM (`<project>/<stack>/<resource name>`). */
export const OWNER_LABEL = 'pulumi.localvm/owner';

/**
 * Inputs of a Vm that are not part of the VM spec: who owns it, whether a VM owned by
 * someone else may be taken over, and whether it should be running. Optional without
 * defaults, so state written before they existed does not diff.
 */
export const vmControlSchema = z.object({
  owner: z.string().min(1).max(256, 'must be at most 256 characters').optional(),
  adopt: z.boolean().optional(),
  running: z.boolean().optional(),
});
export type VmControl = z.output<typeof vmControlSchema>;
const VM_CONTROL_KEYS = Object.keys(vmControlSchema.shape);

/** Changing one of these means a different machine: delete, then create (the name is the identity). */
export const VM_REPLACE_KEYS = [
  'name',
  'backend',
  'image',
  // Another checksum is another image.
  'imageChecksum',
  'imageChecksumUrl',
  'kernel',
  'initrd',
  'append',
  'arch',
  'accel',
  'diskSize',
  'disks',
  'user',
  'userData',
  'isolated',
  // SSH or not is set up at create (key, seed, port forward).
  'transport',
  // A clone of another template is another machine (its RAM and disks are that template's).
  'template',
  // libvirt: another host is another machine (a VM does not move between hosts).
  'host',
  'connect',
] as const;

/** Applied in place by `updateVm` (stop, change, start). */
export const VM_UPDATE_KEYS = ['cpus', 'memory', 'ports'] as const;

/** Stored (labels and the owner also written to the VM's record): changing them never restarts the VM. */
export const VM_METADATA_KEYS = ['labels', 'owner', 'adopt', 'readiness', 'timeouts', 'providerVersion'] as const;

/** The spec part of a Vm's props (drops provider keys and outputs). */
export function vmSpecInput(props: Props): Props {
  return withoutProviderKeys(props, [...VM_OUTPUT_KEYS, ...VM_CONTROL_KEYS]);
}

function vmControlInput(props: Props): Props {
  return Object.fromEntries(Object.entries(props).filter(([k]) => VM_CONTROL_KEYS.includes(k)));
}

/** `check` for Vm: the VM spec schema and the control inputs, failures as `{ property, reason }`. */
export function checkVm(news: Props): CheckOutcome {
  const spec = checkWith(vmSpecSchema, vmSpecObjectSchema.shape, news, vmSpecInput);
  if (spec.failures.length === 0) {
    // Unknowns skip the schema's last step (its template-dependent defaults): apply them to the known fields.
    const known = Object.fromEntries(
      Object.entries(templateDefaults(spec.inputs)).filter(([k]) => spec.inputs[k] === undefined),
    );
    spec.inputs = withoutCloneDefaults({ ...spec.inputs, ...known }, news);
  }
  const control = checkWith(vmControlSchema, vmControlSchema.shape, news, vmControlInput);
  return { inputs: { ...spec.inputs, ...control.inputs }, failures: [...spec.failures, ...control.failures] };
}

/** The fields a clone takes from its template. */
const FROM_TEMPLATE_KEYS = ['image', 'cpus', 'memory'] as const;

/**
 * A clone's checked inputs without the image, cpus and memory the schema filled in: the
 * clone runs its template's, an image given with `template` is refused when the inputs are
 * parsed again at create, and the state holds what the clone really runs with.
 */
function withoutCloneDefaults(inputs: Props, news: Props): Props {
  if (inputs.template === undefined) return inputs;
  const out = { ...inputs };
  for (const k of FROM_TEMPLATE_KEYS) if (news[k] === undefined) delete out[k];
  return out;
}

/** Parses props already accepted by `checkVm` into a full spec; the owner goes into its labels. */
export function vmSpecOf(props: Props): VmSpec {
  const input = vmSpecInput(props);
  const { owner } = vmControlOf(props);
  if (owner !== undefined) input.labels = { ...((input.labels as Props | undefined) ?? {}), [OWNER_LABEL]: owner };
  return parseVmSpec(input);
}

export function vmControlOf(props: Props): VmControl {
  return vmControlSchema.parse(vmControlInput(props));
}

/**
 * Why `owner` may not take over the existing VM `labels` belong to, or undefined when it
 * may: the VM has no owner (made outside Pulumi, or before owners were recorded), the same
 * owner (a retried create), or the resource asked to adopt it.
 */
export function ownerConflict(labels: Record<string, string>, control: VmControl): string | undefined {
  const current = labels[OWNER_LABEL];
  if (current === undefined || control.owner === undefined || current === control.owner) return undefined;
  return control.adopt === true ? undefined : current;
}

/** True when two port lists forward a common host port (two VMs could not run side by side). */
function shareHostPort(a: unknown, b: unknown): boolean {
  const hosts = (v: unknown) =>
    Array.isArray(v) ? v.map((p) => (p as { host?: unknown } | null)?.host).filter((h) => h !== undefined) : [];
  const old = new Set(hosts(a));
  return hosts(b).some((h) => h === UNKNOWN || old.has(h));
}

/** Whether the next `up` must start (or stop) the VM: `running` (default true) against the observed state. */
function runningChanged(olds: Props, news: Props): boolean {
  if (!sameValue(olds.running, news.running)) return true;
  return news.running === false ? olds.state === 'running' : olds.state === 'stopped';
}

/** Backend and accelerator inputs may say `auto`; the state holds what `auto` became. */
function autoMatches(key: string, newValue: unknown): boolean {
  return (key === 'backend' || key === 'accel') && (newValue === 'auto' || newValue === undefined);
}

/**
 * `diff` for Vm. `olds` are the stored outputs (inputs as checked + computed fields),
 * `news` the checked new inputs. An unknown new value counts as a change.
 */
export function diffVm(olds: Props, news: Props): DiffOutcome {
  const changed = (key: string): boolean => {
    const n = news[key];
    if (containsUnknown(n)) return true;
    if (autoMatches(key, n)) return false;
    // A clone that names no image, cpus or memory runs its template's, whatever the state holds.
    if (n === undefined && news.template !== undefined && (FROM_TEMPLATE_KEYS as readonly string[]).includes(key))
      return false;
    return !sameValue(olds[key], n);
  };
  const replaces = VM_REPLACE_KEYS.filter(changed);
  const updates: string[] = [...VM_UPDATE_KEYS, ...VM_METADATA_KEYS].filter(changed);
  if (runningChanged(olds, news)) updates.push('running');
  // Under another (known) name the new VM can exist next to the old one, so it is created
  // first, unless both forward the same host port; the same name must be freed first.
  const renamed = replaces.includes('name') && typeof news.name === 'string' && news.name !== UNKNOWN;
  return {
    changes: replaces.length + updates.length > 0,
    replaces,
    updates,
    deleteBeforeReplace: !renamed || shareHostPort(olds.ports, news.ports),
  };
}

/** Keys whose update restarts the VM: whatever lives only in the guest is lost. */
export function vmUpdateRestarts(updates: readonly string[]): string[] {
  return updates.filter((k) => (VM_UPDATE_KEYS as readonly string[]).includes(k));
}
