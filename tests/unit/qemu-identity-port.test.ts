/**
 * The identity helper's pure parts: the port on the command line of a template's VMs (and
 * normalised in the layout signature, so every clone matches), the data line a clone's
 * helper reads (values checked, never script text), and the answers it gives.
 */
import { createServer, type Server } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildQemuCommand, IDENTITY_PORT, type QemuLaunch } from '../../src/backends/qemu/cmdline.js';
import { launchFor } from '../../src/backends/qemu/layout.js';
import { layoutSignature } from '../../src/backends/qemu/template/compat.js';
import {
  helperArgv,
  identityLine,
  IdentityPort,
  IdentityPorts,
  parseAnswer,
} from '../../src/backends/qemu/template/identity.js';
import { macFor } from '../../src/backends/qemu/template/restore.js';
import { parseVmSpec } from '../../src/schema.js';
import { qemuLaunch } from '../fixtures/qemuLaunch.js';
import { rejection } from '../fixtures/rejection.js';

const GUID = '6f0c8a58-3c39-4b0e-9a8a-0d1f2c3b4a5e';

const launch = (dir: string, o: Partial<QemuLaunch> = {}): QemuLaunch =>
  qemuLaunch(
    {
      boot: { kind: 'kernel', kernel: '/cache/vmlinux' },
      memoryFile: { path: '/t/ram', share: false },
      vmgenid: GUID,
      ...o,
    },
    dir,
  );

const valueOf = (args: string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);

describe('the identity port on the command line', () => {
  it('is a second port on the agent serial bus, right after the agent', () => {
    const { args } = buildQemuCommand(launch('/s/a', { identitySocket: '/s/a/id.sock' }));
    expect(valueOf(args, '-chardev')).toEqual([
      'socket,path=/s/a/qga.sock,server=on,wait=off,id=qga0',
      'socket,path=/s/a/id.sock,server=on,wait=off,id=lvid0',
    ]);
    const devices = valueOf(args, '-device');
    const agent = devices.indexOf('virtserialport,chardev=qga0,name=org.qemu.guest_agent.0');
    expect(devices[agent + 1]).toBe(`virtserialport,chardev=lvid0,name=${IDENTITY_PORT}`);
  });

  it('is absent without a socket, and refused on a path QEMU would misread', () => {
    expect(buildQemuCommand(launch('/s/a')).args.join(' ')).not.toContain('lvid0');
    expect(() => buildQemuCommand(launch('/s/a', { identitySocket: '/s/a,b/id.sock' }))).toThrow(/identitySocket/);
  });

  it('is where launchFor puts it for a VM whose template link has the port', () => {
    const spec = parseVmSpec({ name: 'c1', memory: 256 });
    const paths = {
      dir: '/s/c1',
      qmpSocket: '/s/c1/qmp.sock',
      qgaSocket: '/s/c1/qga.sock',
      consoleLog: '/s/c1/console.log',
      pidFile: '/s/c1/qemu.pid',
      record: '/s/c1/vm.json',
      overlay: '/s/c1/overlay.qcow2',
    };
    const base = {
      name: 'c1',
      spec,
      arch: 'x86_64' as const,
      boot: { kind: 'kernel' as const, kernel: '/k' },
      disks: [],
      paths,
    };
    const link = { name: 't', role: 'clone' as const, ramFile: '/t/ram', memory: 256, vmgenid: GUID };
    expect(launchFor({ ...base, template: { ...link, identityPort: true } }, 'tcg', undefined).identitySocket).toBe(
      '/s/c1/id.sock',
    );
    expect(launchFor({ ...base, template: link }, 'tcg', undefined).identitySocket).toBeUndefined();
  });

  it('is part of the device layout, its path is not', () => {
    const a = layoutSignature(launch('/s/a', { identitySocket: '/s/a/id.sock' }));
    expect(layoutSignature(launch('/other/b', { identitySocket: '/other/b/id.sock' }))).toBe(a);
    expect(layoutSignature(launch('/s/a'))).not.toBe(a);
  });
});

describe('the identity line and answers', () => {
  it('carries epoch seconds, the hostname and the MAC as data', () => {
    expect(identityLine('c1', macFor('c1'), 1_700_000_000_600)).toBe(`1700000001 c1 ${macFor('c1')}\n`);
    // No MAC: the helper keeps the one the clone has.
    expect(identityLine('c1', undefined, 0)).toBe('0 c1 \n');
  });

  it.each([
    ['a host name with a space', () => identityLine('a b', undefined, 0)],
    ['a host name with a newline', () => identityLine('a\n0 b', undefined, 0)],
    ['a host name with shell text', () => identityLine('$(reboot)', undefined, 0)],
    ['a MAC that is not one', () => identityLine('c1', '02:00:00:00:00:0g', 0)],
    ['a time that is not one', () => identityLine('c1', undefined, Number.NaN)],
  ])('refuses %s', (_what, make) => {
    expect(make).toThrow(expect.objectContaining({ code: 'INTERNAL' }));
  });

  it('reads "ok N" as done and anything else as the helper’s error', () => {
    expect(parseAnswer('ok 1700000000\n')).toEqual({ ok: true });
    expect(parseAnswer('error: MAC 02:00:00:00:00:01 could not be set')).toEqual({
      ok: false,
      why: 'MAC 02:00:00:00:00:01 could not be set',
    });
    expect(parseAnswer("date: can't set date: Operation not permitted")).toEqual({
      ok: false,
      why: `unexpected answer "date: can't set date: Operation not permitted"`,
    });
  });

  it('parks one fixed script whose only argument is the port name', () => {
    const argv = helperArgv();
    expect(argv.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    expect(argv.slice(3)).toEqual(['sh', IDENTITY_PORT]);
    const script = argv[2] ?? '';
    // Values arrive on the port and are read raw into variables: the script never changes.
    expect(script).toContain('read -r t h m <&3');
    expect(script).toContain('echo parked >&3');
    expect(script).toContain('exec date -s "@$t" "+ok %s" >&3 2>&3');
  });
});

describe('IdentityPort', () => {
  let dir: string;
  let server: Server;
  const received: string[] = [];
  let answer: (line: string) => void = () => undefined;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lvm-idport-'));
    server = createServer((conn) => {
      conn.setEncoding('utf8');
      answer = (line) => conn.write(line);
      conn.on('data', (d: string) => received.push(d));
    });
    await new Promise<void>((resolve) => server.listen(join(dir, 'id.sock'), resolve));
  });
  afterAll(async () => {
    server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('sends a line and reads answers split across chunks, one at a time', async () => {
    const port = await IdentityPort.connect(join(dir, 'id.sock'), 1_000);
    port.send('1 c1 \n');
    await new Promise((r) => setTimeout(r, 20));
    expect(received.join('')).toBe('1 c1 \n');
    answer('ok ');
    answer('1\nerror: x\n');
    expect(await port.nextLine(1_000, 'first')).toBe('ok 1');
    expect(await port.nextLine(1_000, 'second')).toBe('error: x');
    const e = await rejection(port.nextLine(50, 'a third'));
    expect(e.code).toBe('TIMEOUT');
    expect(e.message).toContain('a third');
    port.close();
  });

  it('says PROTOCOL when the port closes before an answer, TRANSIENT when nothing listens', async () => {
    const port = await IdentityPort.connect(join(dir, 'id.sock'), 1_000);
    port.close();
    expect((await rejection(port.nextLine(1_000, 'an answer'))).code).toBe('PROTOCOL');
    expect((await rejection(IdentityPort.connect(join(dir, 'none.sock'), 1_000))).code).toBe('TRANSIENT');
  });

  it('IdentityPorts hands each VM’s port out once', async () => {
    const ports = new IdentityPorts();
    const port = await IdentityPort.connect(join(dir, 'id.sock'), 1_000);
    ports.set('c1', port);
    expect(ports.take('c1')).toBe(port);
    expect(ports.take('c1')).toBeUndefined();
    port.close();
  });
});

describe('doctor and the identity port', () => {
  it("counts a clone's identity socket as its own file, and no other VM's", async () => {
    const { ownedNames } = await import('../../src/operations/doctor/classifyVm.js');
    const dir = '/s/vms/c1';
    const record = {
      boot: { kind: 'kernel', kernel: '/k' },
      disks: [],
      paths: { qmpSocket: `${dir}/qmp.sock`, qgaSocket: `${dir}/qga.sock` },
      template: { name: 't', role: 'clone', ramFile: '/t/ram', memory: 256, vmgenid: GUID, identityPort: true },
    } as unknown as Parameters<typeof ownedNames>[0];
    expect(ownedNames(record, dir).has('id.sock')).toBe(true);
    expect(ownedNames({ ...record, template: undefined }, dir).has('id.sock')).toBe(false);
  });
});
