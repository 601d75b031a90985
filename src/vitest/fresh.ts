/**
 * `createVmFixture({ fresh: 'test' })`: every test gets its own VM, a clone of a template.
 *
 * - The template is made once per spec: named `<prefix><session id>-t<spec hash>` and
 *   recorded in the session before it is made, so the session's reaper (runner died) or the
 *   globalSetup teardown (clean end) deletes it after its clones, and the start-of-run sweep
 *   deletes one a dead session left. With reuse on it is `<prefix>reuse-<spec hash>-t`, not
 *   in any session, and kept across runs (the sweep skips `<prefix>reuse-`): a later run
 *   clones it straight away.
 * - Workers of one run share it: "find or create" runs under a file lock, so two workers
 *   asking at once make it once.
 * - Each clone `<prefix><session id>-w<worker>-<n>` is recorded in the session before it is
 *   created (the path the worker VM takes) and deleted when its test ends. The clones of the
 *   next tests are made while the current one runs (see freshPerTest).
 */
import { join } from 'node:path';
import type { TestAPI } from 'vitest';
import { connect } from '../connector.js';
import type { OperationContext } from '../context.js';
import { isLocalVmError } from '../errors.js';
import { withLock } from '../host/lock.js';
import { mkdirPrivate } from '../host/privateDir.js';
import { createTemplate, templateInfo } from '../operations/template.js';
import { backendOf, createVmWithRetry, deleteVm, waitForVmReady, type ReadyOptions } from '../operations/vm.js';
import type { VmSpecInput } from '../schema.js';
import { OWNED_KEEP_OPEN_MS } from '../transport.js';
import { currentSessionId, recordBeforeCreate } from './record.js';
import { sessionVmName, sessionsDir } from './session.js';

/** The template of a fresh-per-test fixture: per session, or kept across runs when reused. Pure. */
export function freshTemplateName(prefix: string, hash: string, session: { reuse: true } | { id: string }): string {
  // 6 hash characters keep a 40-character prefix plus a session id (up to 14) within 63.
  return 'reuse' in session ? `${prefix}reuse-${hash}-t` : `${prefix}${session.id}-t${hash.slice(0, 6)}`;
}

/** The clone of test `n` in worker `worker`: `<prefix><session id>-w<worker>-<n>`. Pure. */
export function freshCloneName(prefix: string, id: string, worker: string, n: number): string {
  return `${sessionVmName(prefix, id, worker)}-${n}`;
}

/** Where the lock serialising "find or create template `name`" lives (shared by every run on this host). */
export const templateLockFile = (stateDir: string, name: string) =>
  join(sessionsDir(stateDir), `${name}.template.lock`);

/**
 * Finds template `name` or makes it from `spec`, under a lock so that concurrent workers
 * (of this run or another) make it once. A session template is recorded before it is made.
 * Returns true when this call made it.
 */
export async function findOrCreateTemplate(
  name: string,
  spec: Partial<VmSpecInput>,
  record: boolean,
  ctx: OperationContext,
): Promise<boolean> {
  await mkdirPrivate(sessionsDir(ctx.config.stateDir));
  // A template boot under software emulation on a loaded host can take minutes.
  return withLock(
    templateLockFile(ctx.config.stateDir, name),
    { timeoutMs: 600_000, what: `template ${name}` },
    async () => {
      try {
        await templateInfo(name, ctx);
        return false;
      } catch (error) {
        if (!isLocalVmError(error, 'NOT_FOUND')) throw error;
      }
      if (record) await recordBeforeCreate(name, ctx, 'template');
      const { name: _ignored, ...rest } = spec as VmSpecInput;
      void _ignored;
      await createTemplate({ name, spec: rest }, ctx);
      return true;
    },
  );
}

export interface FreshOptions {
  prefix: string;
  spec: Partial<VmSpecInput>;
  hash: string;
  reuse: boolean;
  worker: string;
  ready?: ReadyOptions | undefined;
  ctx: OperationContext;
}

export interface FreshFixtures {
  vm: Awaited<ReturnType<typeof connect>>;
  vmName: string;
  /** The template every test's VM is cloned from. */
  vmTemplate: string;
}

let clones = 0;

/**
 * How many tests ahead a worker makes clones. Two: restores overlap the running test and each
 * other (measured on 2 cores: 1.58-1.69x the worker fixture per test, against 1.85x one ahead
 * and 1.82x three ahead, where they crowd out the test).
 */
const AHEAD = 2;

/** A clone made for a test before it asked: its name, session record, and whether making it worked. */
interface Prepared {
  name: string;
  ready: Promise<{ release: () => Promise<void> }>;
}

/**
 * Makes clone `name` ready for a test: recorded, created, answered, and its agent's first
 * guest command already run (`true`: under software emulation a restored guest's first
 * process costs ~150 ms of cold code, which the test would otherwise pay).
 */
async function makeClone(name: string, template: string, o: FreshOptions): Promise<{ release: () => Promise<void> }> {
  const session = await recordBeforeCreate(name, o.ctx);
  try {
    await createVmWithRetry({ name, template }, {}, o.ctx);
    await waitForVmReady(name, o.ready ?? {}, o.ctx);
    await (await connect(name, o.ctx)).exec(['true']);
    // Its test may come a while later: keep the agent connection open until then.
    await (await backendOf(name, o.ctx)).guest(name).keepOpen?.(OWNED_KEEP_OPEN_MS);
    return session;
  } catch (error) {
    await deleteVm(name, o.ctx).catch(() => undefined);
    await session.release();
    throw error;
  }
}

/** Deletes a prepared clone nobody took (the worker is done) and releases its record. */
async function discard(p: Prepared, ctx: OperationContext): Promise<void> {
  const session = await p.ready.catch(() => undefined);
  await deleteVm(p.name, ctx).catch(() => undefined);
  await session?.release();
}

/**
 * `base` extended with a worker-scoped `vmTemplate` and a test-scoped clone as `vm`. While a
 * test runs, the worker already makes the clones of its next AHEAD tests (fresh machines
 * nobody has touched), so a test rarely waits for a restore; those prepared for tests that
 * never come are deleted with the worker (or by the session's reaper).
 */
export function freshPerTest(base: TestAPI, o: FreshOptions): TestAPI<FreshFixtures> {
  const prepared: Prepared[] = [];
  const prepare = async (template: string): Promise<void> => {
    while (prepared.length < AHEAD) {
      const name = freshCloneName(o.prefix, await currentSessionId(), o.worker, ++clones);
      const ready = makeClone(name, template, o);
      // Awaited by the test that takes it; a failure there is that test's.
      ready.catch(() => undefined);
      prepared.push({ name, ready });
    }
  };
  return base.extend<{ $test: Omit<FreshFixtures, 'vmTemplate'>; $worker: Pick<FreshFixtures, 'vmTemplate'> }>({
    vmTemplate: [
      // eslint-disable-next-line no-empty-pattern
      async ({}, use) => {
        const id = await currentSessionId();
        const name = freshTemplateName(o.prefix, o.hash, o.reuse ? { reuse: true } : { id });
        await findOrCreateTemplate(name, o.spec, !o.reuse, o.ctx);
        // Not deleted here: other workers may still clone it. The session's end deletes it.
        await use(name);
        for (const p of prepared.splice(0)) await discard(p, o.ctx);
      },
      { scope: 'worker' },
    ],
    vm: async ({ vmTemplate }, use) => {
      if (prepared.length === 0) await prepare(vmTemplate);
      const mine = prepared.shift() as Prepared;
      const session = await mine.ready;
      try {
        await prepare(vmTemplate);
        await use(await connect(mine.name, o.ctx));
      } finally {
        await deleteVm(mine.name, o.ctx);
        await session.release();
      }
    },
    vmName: async ({ vm }, use) => use(vm.name),
  }) as unknown as TestAPI<FreshFixtures>;
}
