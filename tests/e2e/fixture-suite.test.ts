/**
 * localvm/vitest end to end: the sample suite in tests/fixtures/sample-suite run by a real
 * vitest child process against real QEMU, with a temp LOCALVM_HOME.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createVm, deleteVm, listVms, vmInfo } from '../../src/operations/vm.js';
import { deleteTemplate, listTemplates } from '../../src/operations/template.js';
import { createExecaRunner } from '../../src/runner.js';
import { missingTools } from '../fixtures/tools.js';
import { ensureBuilt, repo } from '../fixtures/build.js';

const suiteDir = join(repo, 'tests/fixtures/sample-suite');
const skip = missingTools('qemu-system-x86_64');

interface Result {
  file: string;
  test: string;
  vmName: string;
  bootId: string;
  hostname: string;
  tmpBefore: string;
  runBefore: string;
  pid: number;
  at: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(skip)('localvm/vitest fixtures (real QEMU, sample suite)', () => {
  const home = mkdtempSync(join(tmpdir(), 'localvm-fixture-e2e-'));
  const stateDir = join(home, 'state');
  const config = loadConfig({ ...process.env, LOCALVM_HOME: stateDir, LOCALVM_RUN_DIR: join(home, 'run') });
  const ctx = { config, runner: createExecaRunner() };
  let runs = 0;

  /** Starts the sample suite; resolves the child and where its results go. */
  function startSuite(extra: Record<string, string>): {
    child: ChildProcess;
    results: string;
    done: Promise<{ code: number | null; output: string }>;
  } {
    const results = join(home, `results-${++runs}.jsonl`);
    // The outer vitest's own worker variables must not leak into the inner run.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VITEST')));
    const child = spawn(process.execPath, [join(repo, 'node_modules/vitest/vitest.mjs'), 'run'], {
      cwd: suiteDir,
      env: { ...env, LOCALVM_HOME: stateDir, LOCALVM_RUN_DIR: join(home, 'run'), SAMPLE_RESULTS: results, ...extra },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout?.on('data', (d) => (output += d));
    child.stderr?.on('data', (d) => (output += d));
    const done = new Promise<{ code: number | null; output: string }>((r) =>
      child.on('close', (code) => r({ code, output })),
    );
    return { child, results, done };
  }
  const readResults = (file: string): Result[] =>
    existsSync(file)
      ? readFileSync(file, 'utf8')
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Result)
      : [];
  const vmNames = async () => (await listVms(ctx)).map((v) => v.name);
  const templateNames = async () => (await listTemplates(ctx)).map((t) => t.name);

  beforeAll(() => ensureBuilt('dist/vitest/index.js'), 300_000);
  afterAll(async () => {
    for (const name of await vmNames()) await deleteVm(name, ctx);
    for (const name of await templateNames()) await deleteTemplate(name, ctx);
    rmSync(home, { recursive: true, force: true });
  });

  it('shares one VM per worker across files and leaves no VMs', async () => {
    const run = startSuite({ SAMPLE_WORKERS: '2' });
    const { code, output } = await run.done;
    expect(code, output).toBe(0);
    const results = readResults(run.results);
    expect(results).toHaveLength(10);
    const byPid = new Map<number, Result[]>();
    for (const r of results) byPid.set(r.pid, [...(byPid.get(r.pid) ?? []), r]);
    for (const [, rs] of byPid) {
      expect(new Set(rs.map((r) => r.vmName)).size).toBe(1);
      expect(new Set(rs.map((r) => r.bootId)).size).toBe(1);
      expect(rs[0]?.vmName).toMatch(/^pytest-test-s[0-9a-z-]+-w\d+$/);
    }
    // At least one worker ran more than one file on its VM.
    expect([...byPid.values()].some((rs) => new Set(rs.map((r) => r.file)).size > 1)).toBe(true);
    // Distinct workers had distinct VMs.
    expect(new Set(results.map((r) => r.vmName)).size).toBe(byPid.size);
    expect(await vmNames()).toEqual([]);
    expect(readdirSync(join(stateDir, 'sessions')).filter((f) => f.endsWith('.json'))).toEqual([]);
  });

  it('reaps the VMs of a run killed with SIGKILL within 30 s, and only those', async () => {
    const run = startSuite({ SAMPLE_WORKERS: '1', SAMPLE_HOLD_MS: '120000' });
    const deadline = Date.now() + 120_000;
    while (readResults(run.results).length === 0 && Date.now() < deadline) await sleep(250);
    const [first] = readResults(run.results);
    expect(first, 'the suite never got to its first test').toBeDefined();
    // Not of that session, though it has the same prefix: the reaper must leave it alone.
    const bystander = 'pytest-test-bystander';
    await createVm({ name: bystander, image: 'tiny', backend: 'qemu', memory: 128 }, ctx);
    expect(await vmNames()).toEqual([bystander, first?.vmName].sort());

    run.child.kill('SIGKILL');
    await run.done;
    const killedAt = Date.now();
    while ((await vmNames()).includes(first?.vmName ?? '') && Date.now() - killedAt < 30_000) await sleep(250);
    const reapedAfterMs = Date.now() - killedAt;
    expect(await vmNames()).toEqual([bystander]);
    console.log(`[fixture] reaper removed ${first?.vmName} ${reapedAfterMs} ms after SIGKILL`);
    expect(reapedAfterMs).toBeLessThan(30_000);
    await deleteVm(bystander, ctx);
    // The orphaned worker sleeps on in its test; it is ours to end.
    try {
      process.kill(first?.pid ?? 0, 'SIGKILL');
    } catch {
      // already gone
    }
  });

  it("fresh: 'test' gives every test its own clone, with nothing of the test before it, and leaves nothing", async () => {
    const run = startSuite({ SAMPLE_WORKERS: '2', SAMPLE_MODE: 'clone' });
    const { code, output } = await run.done;
    expect(code, output).toBe(0);
    const results = readResults(run.results);
    expect(results).toHaveLength(10);
    // Ten tests, ten VMs: each its own machine (name, hostname), even within one worker and file.
    expect(new Set(results.map((r) => r.vmName)).size).toBe(10);
    for (const r of results) {
      expect(r.vmName).toMatch(/^pytest-test-s[0-9a-z-]+-w\d+-\d+$/);
      expect(r.hostname).toBe(r.vmName);
      // Test "one" of each file wrote /tmp/<file>-one and /run/sample-<file>-one in its VM;
      // test "two", run after it by the same worker, sees neither (the worker fixture's does).
      expect(r.tmpBefore, `${r.file} ${r.test}`).toBe('');
      expect(r.runBefore, `${r.file} ${r.test}`).toBe('');
    }
    // The check has teeth: in every file, test "two" ran after test "one" in the same worker.
    for (const file of new Set(results.map((r) => r.file))) {
      const [one, two] = ['one', 'two'].map((t) => results.find((r) => r.file === file && r.test === t));
      expect(one?.pid).toBe(two?.pid);
      expect(two?.at ?? 0).toBeGreaterThan(one?.at ?? 0);
    }
    // Clones deleted after their tests; the session's template deleted at the run's end.
    expect(await vmNames()).toEqual([]);
    expect(await templateNames()).toEqual([]);
    expect(readdirSync(join(stateDir, 'sessions')).filter((f) => f.endsWith('.json'))).toEqual([]);
  });

  it("fresh: 'test' after a SIGKILL of the runner: the reaper deletes the clone, then the template", async () => {
    const run = startSuite({ SAMPLE_WORKERS: '1', SAMPLE_MODE: 'clone', SAMPLE_HOLD_MS: '120000' });
    const deadline = Date.now() + 150_000;
    while (readResults(run.results).length === 0 && Date.now() < deadline) await sleep(250);
    const [first] = readResults(run.results);
    expect(first, 'the suite never got to its first test').toBeDefined();
    // The test's clone, and those of the next two tests, made while it runs.
    const later = (k: number) => (first?.vmName ?? '').replace(/-(\d+)$/, (_, n: string) => `-${Number(n) + k}`);
    const deadlineNext = Date.now() + 30_000;
    while ((await vmNames()).length < 3 && Date.now() < deadlineNext) await sleep(250);
    expect((await vmNames()).sort()).toEqual([first?.vmName, later(1), later(2)].sort());
    const [template] = await templateNames();
    expect(template).toMatch(/^pytest-test-s[0-9a-z-]+-t[0-9a-f]{6}$/);

    run.child.kill('SIGKILL');
    await run.done;
    const killedAt = Date.now();
    const gone = async () => (await vmNames()).length === 0 && (await templateNames()).length === 0;
    while (!(await gone()) && Date.now() - killedAt < 30_000) await sleep(250);
    console.log(`[fixture] reaper removed ${first?.vmName} and ${template} ${Date.now() - killedAt} ms after SIGKILL`);
    expect(await vmNames()).toEqual([]);
    expect(await templateNames()).toEqual([]);
    try {
      process.kill(first?.pid ?? 0, 'SIGKILL');
    } catch {
      // already gone
    }
  });

  it('with reuse on, a second run boots no new VM and starts from the clean snapshot', async () => {
    const env = { SAMPLE_WORKERS: '1', LOCALVM_REUSE: '1' };
    const one = startSuite(env);
    const r1 = await one.done;
    expect(r1.code, r1.output).toBe(0);
    const [name] = await vmNames();
    expect(name).toMatch(/^pytest-test-reuse-[0-9a-f]{10}-w1$/);
    const pid = (await vmInfo(name ?? '', ctx)).pid;

    const two = startSuite(env);
    const r2 = await two.done;
    expect(r2.code, r2.output).toBe(0);
    const first = readResults(one.results);
    const second = readResults(two.results).sort((a, b) => a.at - b.at);
    // The same QEMU process served both runs: nothing was booted again. (The guest's boot_id
    // is no witness here: the kernel makes it on first read, and the restored snapshot was
    // taken before anything read it.)
    expect((await vmInfo(name ?? '', ctx)).pid).toBe(pid);
    expect(new Set(first.map((r) => r.bootId)).size).toBe(1);
    expect(new Set([...first, ...second].map((r) => r.vmName))).toEqual(new Set([name]));
    // The first run left files in /tmp and /run; restoring the snapshot taken at its first boot
    // cleared both before the second run's first test (the check can fail: the first run's
    // later tests do see their predecessors' files).
    expect(first.sort((a, b) => a.at - b.at).at(-1)?.runBefore).not.toBe('');
    expect(second[0]?.tmpBefore).toBe('');
    expect(second[0]?.runBefore).toBe('');
    expect(await vmNames()).toEqual([name]);
    await deleteVm(name ?? '', ctx);
  });
});
