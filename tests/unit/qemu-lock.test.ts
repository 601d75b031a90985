import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isLocalVmError } from '../../src/errors.js';
import { acquireFileLock, KeyedMutex, withLock } from '../../src/host/lock.js';
import { processStartTime } from '../../src/host/proc.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lvm-lock-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const holderFile = (pid: number, startTime: number) =>
  JSON.stringify({ pid, startTime, token: 'old', acquiredAt: new Date().toISOString(), what: 'test' });

describe('file lock', () => {
  it('is the existence of the file: taken, then released without a trace', async () => {
    const path = join(dir, 'locks', 'vm.lock');
    const release = await acquireFileLock(path, { timeoutMs: 1_000 });
    const holder = JSON.parse(readFileSync(path, 'utf8'));
    expect(holder.pid).toBe(process.pid);
    expect(holder.startTime).toBe(await processStartTime(process.pid));
    await release();
    expect(existsSync(path)).toBe(false);
  });

  it('waits for a live holder and times out naming its pid', async () => {
    const path = join(dir, 'vm.lock');
    writeFileSync(path, holderFile(process.pid, (await processStartTime(process.pid))!));
    const started = performance.now();
    try {
      await acquireFileLock(path, { timeoutMs: 200 });
      expect.unreachable();
    } catch (error) {
      expect(isLocalVmError(error, 'TIMEOUT')).toBe(true);
      expect((error as { details: Record<string, unknown> }).details.holderPid).toBe(process.pid);
    }
    expect(performance.now() - started).toBeGreaterThanOrEqual(190);
  });

  it('steals a lock whose holder pid does not exist', async () => {
    const path = join(dir, 'vm.lock');
    writeFileSync(path, holderFile(4_194_999, 1)); // above any pid_max
    const release = await acquireFileLock(path, { timeoutMs: 500 });
    expect(JSON.parse(readFileSync(path, 'utf8')).pid).toBe(process.pid);
    await release();
  });

  it('steals a lock whose pid was reused by another process (start time differs)', async () => {
    const path = join(dir, 'vm.lock');
    writeFileSync(path, holderFile(process.pid, (await processStartTime(process.pid))! - 1));
    const release = await acquireFileLock(path, { timeoutMs: 500 });
    await release();
  });

  it('is released when its holder process is SIGKILLed', async () => {
    const path = join(dir, 'vm.lock');
    // A real other process takes the lock the same way and then hangs.
    const child = spawn(
      process.execPath,
      [
        '-e',
        `const fs=require('fs');const st=fs.readFileSync('/proc/self/stat','utf8');` +
          `const start=Number(st.slice(st.lastIndexOf(')')+2).split(' ')[19]);` +
          `fs.writeFileSync(${JSON.stringify(path)},JSON.stringify({pid:process.pid,startTime:start,token:'c',acquiredAt:''}),{flag:'wx'});` +
          `console.log('locked');setInterval(()=>{},1000);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((r) => child.stdout!.once('data', () => r()));
    await expect(acquireFileLock(path, { timeoutMs: 150 })).rejects.toMatchObject({ code: 'TIMEOUT' });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const release = await acquireFileLock(path, { timeoutMs: 2_000 });
    expect(JSON.parse(readFileSync(path, 'utf8')).pid).toBe(process.pid);
    await release();
  });

  it('never lets two holders overlap, within and across waiters', async () => {
    const path = join(dir, 'vm.lock');
    let inside = 0;
    let maxInside = 0;
    let done = 0;
    // Raw file locks (no in-process mutex) so the file is really contended.
    await Promise.all(
      Array.from({ length: 12 }, async () => {
        const release = await acquireFileLock(path, { timeoutMs: 5_000, maxPollMs: 5 });
        inside++;
        maxInside = Math.max(maxInside, inside);
        await new Promise((r) => setTimeout(r, 3));
        inside--;
        done++;
        await release();
      }),
    );
    expect(done).toBe(12);
    expect(maxInside).toBe(1);
    expect(existsSync(path)).toBe(false);
  });

  it('releases after a throwing critical section', async () => {
    const path = join(dir, 'vm.lock');
    await expect(
      withLock(path, { timeoutMs: 500 }, async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(await withLock(path, { timeoutMs: 500 }, async () => 7)).toBe(7);
  });
});

describe('KeyedMutex', () => {
  it('serializes per key and lets other keys run', async () => {
    const m = new KeyedMutex();
    const order: string[] = [];
    const slow = (key: string, tag: string, ms: number) =>
      m.run(key, async () => {
        order.push(`${tag}+`);
        await new Promise((r) => setTimeout(r, ms));
        order.push(`${tag}-`);
      });
    await Promise.all([slow('a', 'a1', 30), slow('a', 'a2', 1), slow('b', 'b1', 1)]);
    expect(order.indexOf('a1-')).toBeLessThan(order.indexOf('a2+'));
    expect(order.indexOf('b1-')).toBeLessThan(order.indexOf('a1-'));
  });
});
