// Public declarations use Node's types (Buffer, NodeJS.ProcessEnv); `preserve` keeps this line in
// the emitted .d.ts, so a consumer with no `types` in its tsconfig (TypeScript 6's default) loads them.
/// <reference types="node" preserve="true" />
/** localvm: local virtual machines as code. The library's public surface. */
export * from './errors.js';
export * from './schema.js';
export * from './runner.js';
export * from './backend.js';
export * from './config.js';
export { defaultContext, getBackend, realClock, resolveBackend, type Clock, type OperationContext } from './context.js';
export * from './operations/vm.js';
export { planCreateVm, planVmOperation } from './operations/plan.js';
export { flattenPlan, planCommands, type Plan, type PlanStep, type PlanRequest, type PlanOperation } from './plan.js';
export type { GuestTransport } from './transport.js';
export { findTool } from './host/tools.js';
export {
  registerBackend,
  backendDrivers,
  backendChoices,
  type BackendDriver,
  type BackendHost,
  type Availability,
} from './backends/registry.js';
export { Connector, connect } from './connector.js';
export * from './backends/orbstack/cmdline.js';
export {
  assertNoDuplicateFlags,
  buildQemuCommand,
  REPEATABLE_QEMU_FLAGS,
  type ImageFormat,
  type QemuAccel,
  type QemuArch,
  type QemuLaunch,
  type QemuPaths,
} from './backends/qemu/cmdline.js';
export * from './backends/qemu/qemuImg.js';
export * from './parsers.js';
export {
  buildTinyImage,
  findTinyImage,
  listImages,
  type TinyImage,
  type ImageEntry,
} from './backends/qemu/image/index.js';
export {
  findCachedImage,
  listDownloads,
  pullImage,
  removeDownload,
  type CachedImage,
  type DownloadEntry,
  type DownloadOptions,
  type DownloadProgress,
  type PullRequest,
} from './images/index.js';
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
export {
  attachDisk,
  createDisk,
  deleteDisk,
  detachDisk,
  diskInfo,
  listStandaloneDisks,
  parseStandaloneDisk,
  resizeDisk,
  type CreateDiskOptions,
  type StandaloneDiskInfo,
} from './operations/standaloneDisk.js';
export {
  createTemplate,
  deleteTemplate,
  listTemplates,
  templateInfo,
  type CreateTemplateInput,
  type TemplateInfo,
} from './operations/template.js';
export * from './operations/doctor.js';
export {
  createPool,
  Lease,
  poolSessions,
  sweepDeadPools,
  type AcquireOptions,
  type JobInput,
  type JobResult,
  type LatencyHistogram,
  type Pool,
  type PoolOptions,
  type PoolSession,
  type PoolStats,
} from './pool/index.js';
export * from './backends/libvirt/index.js';
export { pruneImages, planPrune, type PruneItem, type PruneKind, type PruneReport } from './operations/prune.js';
export { sshCommand, sshConfig } from './operations/ssh.js';
export { AGENT_SILENT } from './transport.js';
// Many libvirt hosts: list every host (unreachable ones reported), the hosts list and placement.
export { listVmsByHost, type UnreachableHost, type VmListing } from './operations/hosts.js';
export { DEFAULT_HOST, findHost, loadHosts, parseHostsFile, type HostEntry, type HostsList } from './hosts/config.js';
export { chooseHost, type HostMemory } from './hosts/placement.js';
export { fanOut, type HostRef, type HostResult } from './hosts/fanout.js';
export { hostTargets, resolveHostTarget, type HostsContext, type TargetRequest } from './hosts/targets.js';
