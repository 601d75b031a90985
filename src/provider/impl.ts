/**
 * The I/O half of the Pulumi provider, one file per resource (vm.ts, vmCommand.ts,
 * vmFile.ts, template.ts; shared.ts holds what they share). The serialized provider objects
 * (providers.ts) load this module at call time inside the provider host.
 */
export {
  providerError,
  type CheckReply,
  type CreateReply,
  type DiffReply,
  type ReadReply,
  type UpdateReply,
} from './shared.js';
export { vmCheck, vmCreate, vmDelete, vmDiff, vmRead, vmUpdate } from './vm.js';
export {
  vmCommandCheck,
  vmCommandCreate,
  vmCommandDelete,
  vmCommandDiff,
  vmCommandRead,
  vmCommandUpdate,
} from './vmCommand.js';
export {
  templateCheck,
  templateCreate,
  templateDelete,
  templateDiff,
  templateRead,
  templateUpdate,
} from './template.js';
export {
  diskAttachmentCheck,
  diskAttachmentCreate,
  diskAttachmentDelete,
  diskAttachmentDiff,
  diskAttachmentRead,
  diskAttachmentUpdate,
  diskCheck,
  diskCreate,
  diskDelete,
  diskDiff,
  diskRead,
  diskUpdate,
} from './disk.js';
export { vmFileCheck, vmFileCreate, vmFileDelete, vmFileDiff, vmFileRead, vmFileUpdate } from './vmFile.js';
