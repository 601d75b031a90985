/** localvm: local virtual machines as code. The library's public surface. */
export * from './errors.js';
export * from './schema.js';
export * from './runner.js';
export * from './backend.js';
export * from './config.js';
export {
  defaultContext,
  findTool,
  getBackend,
  realClock,
  resolveBackend,
  type Clock,
  type OperationContext,
} from './context.js';
export * from './operations/vm.js';
export {
  ready,
  waitForVmReady,
  type ReadinessStrategy,
  type ReadyCheck,
  type ReadyOptions,
  type ReadyResult,
} from './operations/ready.js';
export { Connector, connect } from './connector.js';
export * from './commandBuilder.js';
export * from './parsers.js';
export { buildTinyImage, findTinyImage, listImages, type TinyImage, type ImageEntry } from './backends/qemu/image.js';
export { runDemo, type DemoStep, type DemoOptions } from './demo.js';
export {
  deleteSnapshot,
  listSnapshots,
  parseSnapshotName,
  restoreSnapshot,
  snapshotNameSchema,
  snapshotVm,
} from './operations/snapshot.js';
export { addDisk, listDisks, parseDisk, parseDiskName, removeDisk, type DiskInput } from './operations/disk.js';
