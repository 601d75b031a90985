import { copyFile, link, mkdir, mkdtemp, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { isLocalVmError, LocalVmError } from '../../src/errors.js';
import { createExecaRunner, runChecked, type Command, type CommandRunner } from '../../src/runner.js';
import { buildTinyImage, findTinyImage, listImages, type TinyImage } from '../../src/backends/qemu/image/index.js';
import { missingTools } from '../fixtures/tools.js';

const skip = missingTools('qemu-system-x86_64', 'apt-get', 'dpkg-deb', 'cpio', 'xz');

/** The real runner, remembering every command it ran. */
function recording(base: CommandRunner): CommandRunner & { commands: Command[] } {
  const commands: Command[] = [];
  return {
    commands,
    run(cmd, options) {
      commands.push(cmd);
      return base.run(cmd, options);
    },
  };
}

const isDownload = (c: Command) => c.file === 'apt-get' && c.args[0] === 'download';

/** Newline-delimited JSON over a unix socket, replies matched by id. */
class JsonLineClient {
  private buffer = '';
  private nextId = 1;
  private readonly waiting = new Map<number, (reply: Record<string, unknown>) => void>();
  private constructor(readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      for (let i = this.buffer.indexOf('\n'); i >= 0; i = this.buffer.indexOf('\n')) {
        const line = this.buffer.slice(0, i).trim();
        this.buffer = this.buffer.slice(i + 1);
        if (!line) continue;
        const reply = JSON.parse(line) as Record<string, unknown>;
        const resolve = typeof reply.id === 'number' ? this.waiting.get(reply.id) : undefined;
        if (resolve) resolve(reply);
      }
    });
  }

  static async connect(path: string): Promise<JsonLineClient> {
    const socket = connect(path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new JsonLineClient(socket);
  }

  /** Sends a command and resolves with its `return` value. */
  async call(execute: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<unknown> {
    const id = this.nextId++;
    const reply = new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${execute}: no reply in ${timeoutMs} ms`)), timeoutMs);
      this.waiting.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
    });
    this.socket.write(JSON.stringify({ execute, ...(args ? { arguments: args } : {}), id }) + '\n');
    const r = await reply;
    if (r.error) throw new Error(`${execute}: ${JSON.stringify(r.error)}`);
    return r.return;
  }

  send(execute: string, args?: Record<string, unknown>): void {
    this.socket.write(JSON.stringify({ execute, ...(args ? { arguments: args } : {}) }) + '\n');
  }

  close(): void {
    this.socket.destroy();
  }
}

function processGone(pid: number): Promise<boolean> {
  return readFile(`/proc/${pid}/stat`, 'utf8').then(
    // A daemonized QEMU may linger as a zombie until PID 1 reaps it.
    (s) => /\) Z /.test(s),
    () => true,
  );
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await processGone(pid)) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return processGone(pid);
}

describe.skipIf(skip)('tiny image (real apt, dpkg-deb, xz, cpio)', () => {
  // The real default cache: the image is built once per machine and reused by every run.
  const config = loadConfig();
  const runner = createExecaRunner();
  let image: TinyImage;

  beforeAll(async () => {
    image = await buildTinyImage({ config, runner, log: (line) => console.log(`[tiny] ${line}`) });
  }, 600_000);

  it('produces a kernel and a gzipped initramfs in the cache dir', async () => {
    expect(image.dir.startsWith(join(config.cacheDir, 'images', 'tiny-'))).toBe(true);
    expect(image.dir.endsWith(image.hash)).toBe(true);
    const kernelHead = Buffer.alloc(4);
    const fh = await open(image.kernel, 'r');
    await fh.read(kernelHead, 0, 4, 0);
    await fh.close();
    if (image.bootFormat === 'pvh-vmlinux') expect(kernelHead.toString('latin1')).toBe('\x7fELF');
    const initrd = await readFile(image.initrd);
    expect([initrd[0], initrd[1]]).toEqual([0x1f, 0x8b]);
    expect(initrd.length).toBeGreaterThan(2_000_000);
    expect(initrd.length).toBeLessThan(10_000_000);
    expect(image.append).toContain('console=ttyS0');
    expect(image.kernelVersion).toMatch(/^\d+\.\d+/);
    const record = JSON.parse(await readFile(join(image.dir, 'image.json'), 'utf8')) as { hash: string };
    expect(record.hash).toBe(image.hash);
  });

  it('extracts a PVH-bootable vmlinux from the Debian bzImage', () => {
    expect(image.bootFormat).toBe('pvh-vmlinux');
  });

  it('is a fast no-op the second time: same hash, nothing downloaded', async () => {
    const r = recording(runner);
    const started = performance.now();
    const again = await buildTinyImage({ config, runner: r });
    const elapsed = performance.now() - started;
    expect(again).toEqual(image);
    expect(r.commands.some(isDownload)).toBe(false);
    expect(r.commands.some((c) => c.file === 'dpkg-deb')).toBe(false);
    expect(elapsed).toBeLessThan(1_000);
  });

  it('is listed and found without building', async () => {
    const entries = await listImages(config);
    const entry = entries.find((e) => e.hash === image.hash);
    expect(entry).toMatchObject({ name: 'tiny', dir: image.dir, kernelVersion: image.kernelVersion });
    expect(entry?.sizeBytes).toBeGreaterThan((await stat(image.initrd)).size);
    const found = await findTinyImage(config);
    expect(found?.name).toBe('tiny');
    expect(entries.map((e) => e.hash)).toContain(found?.hash);
  });

  it('finds nothing in an empty cache', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'localvm-img-'));
    try {
      const empty = { ...config, cacheDir: dir };
      expect(await findTinyImage(empty)).toBeUndefined();
      expect(await listImages(empty)).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('fails fast with TOOL_NOT_FOUND and an install command when a tool is missing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'localvm-img-'));
    const commands: Command[] = [];
    const noCpio: CommandRunner = {
      run(cmd, options) {
        commands.push(cmd);
        if (cmd.file === 'cpio') {
          return Promise.reject(new LocalVmError('TOOL_NOT_FOUND', 'cpio was not found on PATH'));
        }
        return runner.run(cmd, options);
      },
    };
    try {
      const error = await buildTinyImage({ config: { ...config, cacheDir: dir }, runner: noCpio }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isLocalVmError(error, 'TOOL_NOT_FOUND')).toBe(true);
      expect((error as LocalVmError).hint).toBe('apt-get install -y cpio');
      expect(commands.some(isDownload)).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reuses the cached image when apt cannot name the kernel (lists removed), unless forced', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'localvm-img-'));
    const copy = join(dir, 'images', `tiny-${image.hash}`);
    await mkdir(copy, { recursive: true });
    for (const name of await readdir(image.dir)) {
      await link(join(image.dir, name), join(copy, name)).catch(() =>
        copyFile(join(image.dir, name), join(copy, name)),
      );
    }
    const commands: Command[] = [];
    const noLists: CommandRunner = {
      async run(cmd, options) {
        commands.push(cmd);
        if (cmd.file !== 'apt-cache') return runner.run(cmd, options);
        return { ...cmd, exitCode: 100, stdout: '', stderr: 'E: No packages found\n', timedOut: false, durationMs: 1 };
      },
    };
    try {
      const offline = { ...config, cacheDir: dir };
      const reused = await buildTinyImage({ config: offline, runner: noLists });
      expect(reused.hash).toBe(image.hash);
      expect(reused.dir).toBe(copy);
      expect(commands.some((c) => c.file === 'apt-cache')).toBe(true);
      const forced = await buildTinyImage({ config: offline, runner: noLists, force: true }).catch((e: unknown) => e);
      expect(isLocalVmError(forced, 'COMMAND_FAILED')).toBe(true);
      expect((forced as LocalVmError).hint).toMatch(/apt-get update/);
      expect(commands.some(isDownload)).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  describe('booted under QEMU', () => {
    let vmDir: string;
    const pids: number[] = [];

    beforeAll(async () => {
      vmDir = await mkdtemp('/tmp/lvimg-');
    });

    afterAll(async () => {
      for (const pid of pids) if (!(await processGone(pid))) process.kill(pid, 'SIGKILL');
      await rm(vmDir, { recursive: true, force: true });
    });

    const launch = async (dir: string) => {
      await runChecked(runner, {
        file: 'qemu-system-x86_64',
        args: [
          ...['-accel', 'tcg,tb-size=64', '-m', '256', '-smp', '1'],
          ...['-nodefaults', '-no-user-config', '-display', 'none'],
          ...['-kernel', image.kernel, '-initrd', image.initrd, '-append', image.append],
          ...['-serial', `file:${dir}/console.log`, '-qmp', `unix:${dir}/qmp.sock,server=on,wait=off`],
          ...['-chardev', `socket,path=${dir}/qga.sock,server=on,wait=off,id=qga0`],
          ...['-device', 'virtio-serial-pci', '-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0'],
          ...['-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0', '-device', 'virtio-rng-pci'],
          ...['-daemonize', '-pidfile', `${dir}/qemu.pid`],
        ],
      });
      const pid = Number((await readFile(`${dir}/qemu.pid`, 'utf8')).trim());
      pids.push(pid);
      return pid;
    };

    it('answers the agent, runs commands, writes files and powers off on guest-shutdown', async () => {
      const started = performance.now();
      const pid = await launch(vmDir);
      const qga = await JsonLineClient.connect(`${vmDir}/qga.sock`);
      try {
        // A guest-sync sent before the agent runs is queued and answered once it is up.
        expect(await qga.call('guest-sync', { id: 4242 }, 120_000)).toBe(4242);
        expect(await qga.call('guest-ping')).toEqual({});
        console.log(`tiny image: launch to first agent answer ${(performance.now() - started).toFixed(0)} ms`);

        const { pid: execPid } = (await qga.call('guest-exec', {
          path: '/bin/sh',
          arg: ['-c', 'echo hi; id -u'],
          'capture-output': true,
        })) as { pid: number };
        let status: { exited: boolean; exitcode?: number; 'out-data'?: string };
        do {
          status = (await qga.call('guest-exec-status', { pid: execPid })) as typeof status;
        } while (!status.exited);
        expect(status.exitcode).toBe(0);
        expect(Buffer.from(status['out-data'] ?? '', 'base64').toString()).toBe('hi\n0\n');

        const handle = await qga.call('guest-file-open', { path: '/tmp/hello.txt', mode: 'w' });
        const written = (await qga.call('guest-file-write', {
          handle,
          'buf-b64': Buffer.from('hello tiny').toString('base64'),
        })) as { count: number };
        expect(written.count).toBe(10);
        await qga.call('guest-file-close', { handle });
        const rh = await qga.call('guest-file-open', { path: '/tmp/hello.txt', mode: 'r' });
        const read = (await qga.call('guest-file-read', { handle: rh })) as { 'buf-b64': string };
        await qga.call('guest-file-close', { handle: rh });
        expect(Buffer.from(read['buf-b64'], 'base64').toString()).toBe('hello tiny');

        // guest-shutdown sends no reply on success; QEMU exiting is the answer.
        qga.send('guest-shutdown', { mode: 'powerdown' });
        expect(await waitGone(pid, 30_000)).toBe(true);
      } finally {
        qga.close();
      }
    });

    it('powers off on QMP system_powerdown (ACPI power button) as soon as the agent answers', async () => {
      const dir = join(vmDir, 'b');
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir);
      const pid = await launch(dir);
      const qga = await JsonLineClient.connect(`${dir}/qga.sock`);
      const qmp = await JsonLineClient.connect(`${dir}/qmp.sock`);
      try {
        expect(await qga.call('guest-sync', { id: 7 }, 120_000)).toBe(7);
        // acpid runs before the agent starts: the button works as soon as the agent answers.
        await qmp.call('qmp_capabilities');
        await qmp.call('system_powerdown');
        expect(await waitGone(pid, 30_000)).toBe(true);
      } finally {
        qga.close();
        qmp.close();
      }
    });
  });
});
