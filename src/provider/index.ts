// Public declarations use Node's types (Buffer, NodeJS.ProcessEnv); `preserve` keeps this line in
// the emitted .d.ts, so a consumer with no `types` in its tsconfig (TypeScript 6's default) loads them.
/// <reference types="node" preserve="true" />
/**
 * `localvm/pulumi`: the Pulumi resources `Vm`, `VmCommand`, `VmFile` and `Template`.
 *
 * ```ts
 * import { Vm, VmCommand } from 'localvm/pulumi';
 * const vm = new Vm('web', { image: 'tiny', memory: 256 });
 * new VmCommand('hello', { vm: vm.name, create: ['uname', '-a'] });
 * // A clone of a template (QEMU): wired through the output, so Pulumi orders create and delete.
 * const base = new Template('base', { spec: { memory: 256 } });
 * new Vm('clone', { template: base.name });
 * ```
 */
export {
  PROVIDER_VERSION,
  Template,
  Vm,
  VmCommand,
  VmFile,
  type CommandArg,
  type DiskArgs,
  type PortForwardArgs,
  type ProbeArgs,
  type TemplateArgs,
  type TemplateSpecArgs,
  type TimeoutsArgs,
  type VmArgs,
  type VmCommandArgs,
  type VmFileArgs,
} from './resources.js';
export { Disk, DiskAttachment, type DiskAttachmentArgs, type DiskResourceArgs } from './diskResources.js';
export { UNKNOWN } from './logic.js';

/**
 * The provider implementation, loaded on demand. The serialized provider objects call this
 * inside the Pulumi provider host; programs never need it.
 */
export function loadProviderImpl(): Promise<typeof import('./impl.js')> {
  return import('./impl.js');
}
