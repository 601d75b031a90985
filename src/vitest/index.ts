// Public declarations use Node's types (Buffer, NodeJS.ProcessEnv); `preserve` keeps this line in
// the emitted .d.ts, so a consumer with no `types` in its tsconfig (TypeScript 6's default) loads them.
/// <reference types="node" preserve="true" />
/**
 * `localvm/vitest`: worker-scoped VM fixtures for vitest 4.
 *
 * - `vmTest` / `createVmFixture()` give each vitest worker one VM (a `Connector` as `vm`,
 *   its name as `vmName`), created lazily by the first test that uses it and reused by
 *   every test file the worker runs (this needs `isolate: false`: with isolation vitest
 *   starts a fresh worker, and so a fresh VM, per file). It is deleted at worker teardown.
 * - Names: `<prefix><session id>-w<worker>`, prefix `pytest-test-` unless configured.
 * - Crash safety: a VM is written to the session record before it is created, and a
 *   detached reaper deletes the session's VMs when the test runner dies, SIGKILL included.
 * - Reuse (`LOCALVM_REUSE=1` or `reuse: true`): `<prefix>reuse-<spec hash>-w<worker>`
 *   survives the run and is adopted by the next one, then reset: restored to the snapshot
 *   taken right after its first boot (QEMU), or `DEFAULT_RESET` run where there are no snapshots.
 *   Reused VMs are not in the session record (the reaper leaves them) and the
 *   session-start sweep skips names starting with `<prefix>reuse-`.
 */
import { createHash } from 'node:crypto';
import { test as base, type TestAPI } from 'vitest';
import { connect, type Connector } from '../connector.js';
import { withDefaults, type OperationContext } from '../context.js';
import { LocalVmError } from '../errors.js';
import {
  backendOf,
  cleanupVms,
  createVmWithRetry,
  deleteVm,
  waitForVmReady,
  type ReadyOptions,
} from '../operations/vm.js';
import { listSnapshots, restoreSnapshot, snapshotVm } from '../operations/snapshot.js';
import { hasCapability } from '../backend.js';
import { z } from 'zod';
import { parseOrThrow, parseVmSpec, specFingerprint, type VmSpecInput } from '../schema.js';
import { listTemplates } from '../operations/template.js';
import { isLocalVmError } from '../errors.js';
import { freshPerTest } from './fresh.js';
import { deleteEntry, recordBeforeCreate, runnerPid } from './record.js';
import {
  deletionOrder,
  processAlive,
  processStart,
  readSession,
  sessionFile,
  sessionIdFor,
  sessionVmName,
  sessionsDir,
  updateSession,
} from './session.js';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

export { sessionIdFor, sessionVmName, type SessionRecord, type SessionVm } from './session.js';
export { reaperCommand, runnerPid } from './record.js';
export { freshCloneName, freshTemplateName, type FreshFixtures } from './fresh.js';

/**
 * The reset of a reused VM on a backend without snapshots (OrbStack): /tmp and /var/tmp are
 * emptied. Processes started by an earlier run and files elsewhere remain there, so tests
 * that want a reusable VM keep their scratch under /tmp. QEMU VMs are restored to a snapshot.
 */
export const DEFAULT_RESET: string[] = [
  '/bin/sh',
  '-c',
  'for d in /tmp /var/tmp; do [ -d "$d" ] && find "$d" -mindepth 1 -maxdepth 1 -exec rm -rf {} +; done; true',
];

export interface VmFixtureOptions {
  /** The worker VM's spec; `name` is chosen by the fixture. Default: the tiny image, qemu, 256 MiB. */
  spec?: Partial<VmSpecInput>;
  /** Name prefix of every VM the fixture makes (default: LOCALVM_TEST_PREFIX, else `pytest-test-`). */
  prefix?: string;
  /** Keep the worker VM across runs (default: `config.reuse`, i.e. LOCALVM_REUSE=1). */
  reuse?: boolean;
  /** How a reused VM is reset where there are no snapshots (a command); `false`: no reset at all. */
  reset?: string[] | false;
  /**
   * `'worker'` (default): one VM per worker, shared by its tests. `'test'`: every test gets
   * its own VM, a clone of a template made once per spec (see ./fresh.ts), deleted after the test.
   */
  fresh?: 'worker' | 'test';
  /** Readiness options for the first use. */
  ready?: ReadyOptions;
  /** Operation context overrides (config, runner); default: the environment. */
  context?: Partial<OperationContext>;
}

export interface VmFixtures {
  /** The worker's VM. */
  vm: Connector;
  vmName: string;
}

/** What the fixture takes from vitest's environment (the rest comes from LocalVmConfig). */
export interface FixtureEnv {
  /** The vitest pool slot (VITEST_POOL_ID): stable for one worker, reused across files. */
  worker: string;
}

/** Vitest's own variables, read here because they belong to the vitest boundary. */
export function fixtureEnv(env: NodeJS.ProcessEnv = process.env): FixtureEnv {
  return { worker: env.VITEST_POOL_ID ?? env.VITEST_WORKER_ID ?? String(process.pid) };
}

/** The test prefix: `option`, else LOCALVM_TEST_PREFIX, else `pytest-test-`. Validated as a name prefix. */
export function testPrefix(option?: string, ctx?: Partial<OperationContext>): string {
  const prefix = option ?? withDefaults(ctx).config.testPrefix;
  return parseOrThrow(prefixSchema, prefix, 'test prefix');
}

// Room is left after the prefix for a session id and worker number within 63 characters.
const prefixSchema = z.string().regex(/^[a-z0-9][a-z0-9-]{0,39}$/, 'must be 1-40 characters of a-z, 0-9 and "-"');

/**
 * The spec hash naming a reused VM: the fingerprint of the spec (name excluded), and the
 * libvirt host or URI when the spec names one (the fingerprint leaves placement out, but a
 * worker must not adopt its VM from another host).
 */
export function reuseHash(spec: Partial<VmSpecInput>): string {
  const parsed = parseVmSpec({ ...spec, name: 'reuse' });
  const fingerprint = specFingerprint(parsed);
  const place = (spec as { connect?: string }).connect ?? spec.host;
  if (place === undefined) return fingerprint.slice(0, 10);
  return createHash('sha256').update(`${fingerprint}@${place}`).digest('hex').slice(0, 10);
}

/** `<prefix>reuse-<hash>-w<worker>`. Pure. */
export function reuseVmName(prefix: string, hash: string, worker: string): string {
  return `${prefix}reuse-${hash}-w${worker}`;
}

const DEFAULT_SPEC: Partial<VmSpecInput> = { image: 'tiny', memory: 256 };

/** The snapshot a reused VM is taken back to: RAM, devices and disks as of its first boot. */
export const CLEAN_SNAPSHOT = 'localvm-clean';

/**
 * Brings a reused VM to a clean state. Where the backend has snapshots, the first run saves
 * the freshly booted VM and every later run restores it, so nothing a test did survives
 * (processes included). Elsewhere the `reset` command runs; `reset: false` keeps the VM as
 * the last run left it.
 */
async function resetReused(name: string, adopted: boolean, reset: string[] | false, ctx: OperationContext) {
  if (reset === false) return;
  const backend = await backendOf(name, ctx);
  if (hasCapability(backend, 'snapshots')) {
    const saved = adopted && (await listSnapshots(name, ctx)).some((s) => s.name === CLEAN_SNAPSHOT);
    if (saved) await restoreSnapshot(name, CLEAN_SNAPSHOT, ctx);
    else await snapshotVm(name, CLEAN_SNAPSHOT, ctx);
    return;
  }
  const r = await (await connect(name, ctx)).exec(reset);
  if (r.exitCode !== 0) {
    throw new LocalVmError('COMMAND_FAILED', `resetting reused VM ${name} failed (exit ${r.exitCode}): ${r.stderr}`, {
      vm: name,
    });
  }
}

/**
 * A `test` extended with a worker-scoped `vm` (Connector) and `vmName`. The VM is created on
 * first use (createVmWithRetry + waitForVmReady) and deleted at worker teardown, unless reused.
 */
export function createVmFixture(options: VmFixtureOptions = {}): TestAPI<VmFixtures> {
  if (options.fresh === 'test') {
    const ctx = withDefaults(options.context);
    const spec = { ...DEFAULT_SPEC, ...options.spec };
    return freshPerTest(base, {
      prefix: testPrefix(options.prefix, ctx),
      spec,
      hash: reuseHash(spec),
      reuse: options.reuse ?? ctx.config.reuse,
      worker: fixtureEnv().worker,
      ready: options.ready,
      ctx,
    }) as unknown as TestAPI<VmFixtures>;
  }
  if (options.fresh !== undefined && options.fresh !== 'worker') {
    throw new LocalVmError('VALIDATION', `fresh must be 'worker' or 'test', not ${String(options.fresh)}`, {
      issues: [{ property: 'fresh', reason: "must be 'worker' or 'test'" }],
    });
  }
  return base.extend<{ $worker: VmFixtures }>({
    vm: [
      // eslint-disable-next-line no-empty-pattern
      async ({}, use) => {
        const ctx = withDefaults(options.context);
        const env = fixtureEnv();
        const prefix = testPrefix(options.prefix, ctx);
        const specInput = { ...DEFAULT_SPEC, ...options.spec };
        const reuse = options.reuse ?? ctx.config.reuse;
        if (reuse) {
          const name = reuseVmName(prefix, reuseHash(specInput), env.worker);
          const created = await createVmWithRetry({ ...specInput, name }, {}, ctx);
          await waitForVmReady(name, options.ready ?? {}, ctx);
          await resetReused(name, created.adopted, options.reset ?? DEFAULT_RESET, ctx);
          const vm = await connect(name, ctx);
          await use(vm);
          return;
        }
        const pid = runnerPid();
        const id = sessionIdFor(pid, await processStart(pid));
        const name = sessionVmName(prefix, id, env.worker);
        const session = await recordBeforeCreate(name, ctx);
        try {
          await createVmWithRetry({ ...specInput, name }, {}, ctx);
          await waitForVmReady(name, options.ready ?? {}, ctx);
          await use(await connect(name, ctx));
        } finally {
          await deleteVm(name, ctx);
          await session.release();
        }
      },
      { scope: 'worker' },
    ],
    vmName: [async ({ vm }, use) => use(vm.name), { scope: 'worker' }],
  });
}

/** The default fixture: a tiny QEMU VM per worker, prefix and reuse from the environment. */
export const vmTest: ReturnType<typeof createVmFixture> = (() => {
  try {
    return createVmFixture();
  } catch (error) {
    // Outside a test worker (a globalSetup file importing the sweep helpers) vitest has no
    // runner to extend: the module must still load there, so vmTest becomes a stub.
    const stub = () => {
      throw new LocalVmError('UNSUPPORTED', 'vmTest can only be used in test files run by vitest', { cause: error });
    };
    return stub as unknown as ReturnType<typeof createVmFixture>;
  }
})();

/** Template names starting with `prefix`; none where no backend has templates. */
async function templatesWithPrefix(prefix: string, ctx: OperationContext): Promise<string[]> {
  try {
    return (await listTemplates(ctx)).map((t) => t.name).filter((n) => n.startsWith(prefix));
  } catch (error) {
    if (isLocalVmError(error, 'UNSUPPORTED')) return [];
    throw error;
  }
}

/**
 * Deletes VMs and templates left by earlier runs: names starting with `prefix`, except
 * reused ones (`<prefix>reuse-`) and those of sessions whose runner is still alive (a
 * concurrent run). Templates go after the VMs (their clones); one still used by a clone
 * outside any dead session is left. Session files of dead runners are removed. Returns the
 * names deleted (VMs, then templates).
 */
export async function sweepLeftovers(prefix?: string, ctx?: Partial<OperationContext>): Promise<string[]> {
  const c = withDefaults(ctx);
  const p = testPrefix(prefix, c);
  // VMs and templates first, sessions second: a runner records each in its session before
  // creating it, so anything listed here is already in a session the scan below reads. The
  // other order misses a runner that starts between the scan and the list, and deletes its new VM.
  const { matched } = await cleanupVms({ prefix: p, dryRun: true }, c);
  const templates = await templatesWithPrefix(p, c);
  const live = new Set<string>();
  const dir = sessionsDir(c.config.stateDir);
  for (const entry of await readdir(dir).catch(() => [] as string[])) {
    if (!entry.endsWith('.json')) continue;
    const record = await readSession(join(dir, entry)).catch(() => undefined);
    if (record && (await processAlive(record.pid, record.startTime))) {
      for (const vm of record.vms) live.add(vm.name);
    } else {
      await rm(join(dir, entry), { force: true });
    }
  }
  const doomed = (name: string) => !name.startsWith(`${p}reuse-`) && !live.has(name);
  const deleted: string[] = [];
  for (const name of matched.filter(doomed)) {
    await deleteVm(name, c);
    deleted.push(name);
  }
  for (const name of templates.filter(doomed)) {
    if (await deleteEntry({ name, pid: 0, kind: 'template' }, c)) deleted.push(name);
    else c.log?.(`sweep: template ${name} is still used by a clone: left`);
  }
  return deleted;
}

/**
 * A vitest `globalSetup` function: sweeps leftovers at session start and, at the end of the
 * run, deletes whatever this session's record still lists (VMs of workers that died, then
 * the templates of `fresh: 'test'` fixtures). Use it as `export default localvmGlobalSetup()`.
 */
export function localvmGlobalSetup(options: { prefix?: string; context?: Partial<OperationContext> } = {}) {
  return async () => {
    const ctx = withDefaults(options.context);
    const swept = await sweepLeftovers(options.prefix, ctx);
    if (swept.length) ctx.log?.(`swept leftover test VMs: ${swept.join(', ')}`);
    return async () => {
      const id = sessionIdFor(process.pid, await processStart(process.pid));
      const record = await readSession(sessionFile(ctx.config.stateDir, id));
      const kept: string[] = [];
      for (const entry of deletionOrder(record?.vms ?? [])) {
        if (!(await deleteEntry(entry, ctx))) kept.push(entry.name);
      }
      // A template kept for a clone that is somehow still there stays in the record: the reaper retries.
      await updateSession(ctx.config.stateDir, id, (r) =>
        r && kept.length ? { ...r, vms: r.vms.filter((v) => kept.includes(v.name)) } : undefined,
      );
    };
  };
}
