/** The QEMU backend and the pieces other layers (CLI, benchmarks, tests) use directly. */
export { createQemuBackend, type QemuBackend, type QemuBackendOptions } from './backend.js';
export { diskLayout, launchFor, qemuBinaryFor, seedDirFor } from './layout.js';
export { resolveAccel, createKvmProbe, type AccelChoice, type AccelContext, type KvmVerdict } from './accel.js';
export { QmpClient, withQmp, type QmpEvent } from './qmp.js';
export { QgaClient, guestExec, guestPutFile, guestGetFile, wrapArgv } from './qga.js';
export { withLock, acquireFileLock, KeyedMutex } from '../../host/lock.js';
export { parseProcStat } from '../../host/proc.js';
export {
  vmPaths,
  socketPaths,
  reconcile,
  cmdlineHasName,
  MAX_SOCKET_PATH,
  type VmRecord,
  type VmPaths,
} from './state.js';
