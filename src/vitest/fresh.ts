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
 *   created (the path the worker VM takes) and deleted when its test ends.
 */
import { join } from 'node:path';
import type { TestAPI } from 'vitest';
import { connect } from '../connector.js';
import type { OperationContext } from '../context.js';
import { isLocalVmError } from '../errors.js';
import { withLock } from '../host/lock.js';
import { mkdirPrivate } from '../host/privateDir.js';
import { createTemplate, templateInfo } from '../operations/template.js';
import { createVmWithRetry, deleteVm, waitForVmReady, type ReadyOptions } from '../operations/vm.js';
import type { VmSpecInput } from '../schema.js';
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

/** `base` extended with a worker-scoped `vmTemplate` and a test-scoped clone as `vm`. */
export function freshPerTest(base: TestAPI, o: FreshOptions): TestAPI<FreshFixtures> {
  return base.extend<{ $test: Omit<FreshFixtures, 'vmTemplate'>; $worker: Pick<FreshFixtures, 'vmTemplate'> }>({
    vmTemplate: [
      // eslint-disable-next-line no-empty-pattern
      async ({}, use) => {
        const id = await currentSessionId();
        const name = freshTemplateName(o.prefix, o.hash, o.reuse ? { reuse: true } : { id });
        await findOrCreateTemplate(name, o.spec, !o.reuse, o.ctx);
        // Not deleted here: other workers may still clone it. The session's end deletes it.
        await use(name);
      },
      { scope: 'worker' },
    ],
    vm: async ({ vmTemplate }, use) => {
      const name = freshCloneName(o.prefix, await currentSessionId(), o.worker, ++clones);
      const session = await recordBeforeCreate(name, o.ctx);
      try {
        await createVmWithRetry({ name, template: vmTemplate }, {}, o.ctx);
        await waitForVmReady(name, o.ready ?? {}, o.ctx);
        await use(await connect(name, o.ctx));
      } finally {
        await deleteVm(name, o.ctx);
        await session.release();
      }
    },
    vmName: async ({ vm }, use) => use(vm.name),
  }) as unknown as TestAPI<FreshFixtures>;
}
