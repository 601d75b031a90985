/**
 * A real distribution guest through the library: the Debian bookworm images that
 * scripts/build-debian-image.sh builds from Debian's packages (systemd, cloud-init with
 * NoCloud, openssh-server, GRUB on the disk booted by SeaBIOS), under TCG. Each variant's VM
 * boots once and every check runs on it in file order, because a boot costs about a minute.
 *
 * Memory: 1024 MiB. The guest uses ~200 MiB once cloud-init is done, but the stock
 * initramfs (every storage driver) and cloud-init's Python need headroom while booting, and
 * under TCG only the pages the guest touches cost host memory.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { connect } from '../../src/connector.js';
import { getBackend, realClock, type OperationContext } from '../../src/context.js';
import { restoreSnapshot, snapshotVm } from '../../src/operations/snapshot.js';
import { ready } from '../../src/operations/ready.js';
import { AGENT_SILENT } from '../../src/operations/readyGuest.js';
import { createVm, deleteVm, listVms, startVm, stopVm, vmInfo, waitForVmReady } from '../../src/operations/vm.js';
import { createExecaRunner } from '../../src/runner.js';
import { ensureBuilt, repo } from '../fixtures/build.js';
import { codeOf, rejection } from '../fixtures/rejection.js';
import { distroImagePath, ed25519AuthorizedKey, freePort, missingDistroImage, sshBanner } from '../fixtures/distro.js';

const skipAgent = missingDistroImage('agent') !== undefined;
const skipNoAgent = missingDistroImage('noagent') !== undefined;
const cli = join(repo, 'dist/cli/main.js');

const PREFIX = 'pytest-test-distro-';
const MEMORY = 1024;
// A loaded 2-core machine boots a seeded Debian guest in ~1 min; leave room for a slow day.
const BOOT_MS = 600_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const since = (t: number) => `${((performance.now() - t) / 1000).toFixed(1)} s`;

function context(home: string): OperationContext {
  return {
    config: loadConfig({ ...process.env, LOCALVM_HOME: home }),
    runner: createExecaRunner(),
    clock: realClock,
  };
}

const userKey = ed25519AuthorizedKey('localvm-distro-test');
const userData = `#cloud-config
users:
  - name: alice
    shell: /bin/bash
    sudo: ALL=(ALL) NOPASSWD:ALL
    ssh_authorized_keys:
      - ${userKey}
write_files:
  - path: /etc/localvm-distro.txt
    permissions: '0644'
    content: |
      written by cloud-init
runcmd:
  - [sh, -c, 'echo "runcmd ran" > /var/lib/localvm-runcmd']
`;

describe.skipIf(skipAgent)('Debian guest with qemu-guest-agent (real QEMU, TCG)', () => {
  const VM = `${PREFIX}agent`;
  const home = mkdtempSync(join(tmpdir(), 'lvm-distro-'));
  const ctx = context(home);
  const measured: Record<string, string> = {};
  const sh = async (script: string, timeoutMs = 60_000) => {
    const r = await (await connect(VM, ctx)).shell(script, { timeoutMs });
    if (r.exitCode !== 0) throw new Error(`guest: ${script} exited ${r.exitCode}: ${r.stderr}`);
    return r.stdout;
  };
  const ready = async () => waitForVmReady(VM, { timeoutMs: BOOT_MS }, ctx);

  beforeAll(async () => {
    const started = performance.now();
    await createVm(
      {
        name: VM,
        image: distroImagePath('agent'),
        memory: MEMORY,
        userData,
        // Larger than the image's 2 GiB: cloud-init's growpart and resize2fs take the rest.
        diskSize: '3G',
        disks: [{ name: 'data', size: '64M' }],
      },
      ctx,
    );
    await ready();
    measured['create → agent (seed)'] = since(started);
  }, BOOT_MS + 60_000);

  afterAll(async () => {
    for (const v of await listVms(ctx).catch(() => [])) await deleteVm(v.name, ctx).catch(() => undefined);
    await rm(home, { recursive: true, force: true });
    console.log(`[distro agent] ${JSON.stringify(measured)}`);
  });

  it('boots from its root disk through GRUB, with the seed and the data disk attached', async () => {
    // The root disk is the only boot device; the seed and the data disk never are (before
    // bootindex, SeaBIOS tried an earlier-slot disk first and hung on it).
    const pid = (await vmInfo(VM, ctx)).pid;
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    expect(argv.filter((a) => a.includes('bootindex'))).toEqual(['virtio-blk-pci,drive=root,bootindex=0']);
    expect(await sh('findmnt -no SOURCE /')).toBe('/dev/vda1\n');
    expect(await sh('cat /proc/cmdline')).toMatch(/^BOOT_IMAGE=\/boot\/vmlinuz-\S+ root=UUID=\S+ ro console=ttyS0/);
    expect(await sh('blkid -L cidata')).toMatch(/^\/dev\/vd[b-z]\n$/);
  });

  it(
    'finishes cloud-init: `cloud-init status --wait` says done',
    async () => {
      const started = performance.now();
      const out = await sh('cloud-init status --wait', BOOT_MS);
      measured['agent → cloud-init done'] = since(started);
      expect(out).toContain('status: done');
    },
    BOOT_MS,
  );

  it('applied the user-data: write_files, runcmd, a user with the authorized key', async () => {
    expect(await sh('cat /etc/localvm-distro.txt')).toBe('written by cloud-init\n');
    expect(await sh('cat /var/lib/localvm-runcmd')).toBe('runcmd ran\n');
    expect(await sh('getent passwd alice | cut -d: -f7')).toBe('/bin/bash\n');
    expect((await sh('cat /home/alice/.ssh/authorized_keys')).split('\n')).toContain(userKey);
    // No password logins: the new user has no password, root is locked.
    expect(await sh('passwd -S alice | cut -d" " -f2; passwd -S root | cut -d" " -f2')).toMatch(/^(L|NP)\nL\n$/);
  });

  it('grows its root file system to the size of its overlay', async () => {
    const bytes = Number(await sh('findmnt -bno SIZE /'));
    expect(bytes).toBeGreaterThan(2.5 * 1024 ** 3);
  });

  it('partitions and formats the extra disk in the guest', async () => {
    const disk = (await sh(`lsblk -bdno NAME,SIZE | awk '$2 == ${64 * 1024 * 1024} { print $1 }'`)).trim();
    expect(disk).toMatch(/^vd[b-z]$/);
    await sh(
      [
        `printf 'label: dos\\n,,L\\n' | sfdisk --quiet /dev/${disk}`,
        'udevadm settle',
        `mkfs.ext4 -q -L data /dev/${disk}1`,
        'mkdir -p /mnt/data',
        "echo 'LABEL=data /mnt/data ext4 defaults,nofail 0 2' >> /etc/fstab",
        'mount /mnt/data',
        'echo kept > /mnt/data/file',
        'sync',
      ].join(' && '),
    );
  });

  it(
    'keeps the files and the partitioned disk across stop and start, and still boots from its root disk',
    async () => {
      await stopVm(VM, {}, ctx);
      const started = performance.now();
      await startVm(VM, ctx);
      await ready();
      measured['start → agent (cloud-init already ran)'] = since(started);
      expect(await sh('findmnt -no SOURCE /')).toBe('/dev/vda1\n');
      expect(await sh('cat /etc/localvm-distro.txt')).toBe('written by cloud-init\n');
      expect(await sh('cat /mnt/data/file')).toBe('kept\n');
      expect(await sh('findmnt -no LABEL /mnt/data')).toBe('data\n');
    },
    BOOT_MS,
  );

  it('restores a snapshot', async () => {
    await sh('echo before > /root/snap-marker && sync');
    await snapshotVm(VM, 'clean', ctx);
    await sh('echo after > /root/snap-marker && rm /etc/localvm-distro.txt && sync');
    await restoreSnapshot(VM, 'clean', ctx);
    expect(await sh('cat /root/snap-marker')).toBe('before\n');
    expect(await sh('cat /etc/localvm-distro.txt')).toBe('written by cloud-init\n');
  }, 180_000);
});

describe.skipIf(skipNoAgent)('Debian guest without qemu-guest-agent: reached over SSH (real QEMU, TCG)', () => {
  const VM = `${PREFIX}noagent`;
  const home = mkdtempSync(join(tmpdir(), 'lvm-distro-'));
  const ctx = context(home);
  const dir = join(home, 'vms', VM);
  const measured: Record<string, string> = {};
  // A key pair of the test's own user, so the test can log in as that user next to ours.
  const aliceKey = join(home, 'alice_key');
  let sshPort = 0;
  const cliRun = (...args: string[]) =>
    spawnSync(process.execPath, [cli, ...args], { env: { ...process.env, LOCALVM_HOME: home }, encoding: 'utf8' });
  const ssh = (args: string[]) => spawnSync('ssh', args, { encoding: 'utf8', timeout: 120_000 });

  beforeAll(async () => {
    ensureBuilt('dist/cli/main.js');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'alice', '-f', aliceKey]);
    const alicePub = (await readFile(`${aliceKey}.pub`, 'utf8')).trim();
    sshPort = await freePort();
    const started = performance.now();
    await createVm(
      {
        name: VM,
        image: distroImagePath('noagent'),
        memory: MEMORY,
        userData: userData.replace(userKey, alicePub),
        ports: [{ host: sshPort, guest: 22 }],
      },
      ctx,
    );
    // The default readiness: the VM's transport, auto, finds SSH answering (no agent ever does).
    await waitForVmReady(VM, { timeoutMs: BOOT_MS }, ctx);
    measured['create → ready over SSH (seed)'] = since(started);
  }, BOOT_MS + 60_000);

  afterAll(async () => {
    for (const v of await listVms(ctx).catch(() => [])) await deleteVm(v.name, ctx).catch(() => undefined);
    await rm(home, { recursive: true, force: true });
    console.log(`[distro noagent] ${JSON.stringify(measured)}`);
  });

  it('answers on port 22 through the port forwards, and auto remembered ssh', async () => {
    // sshd re-executes itself for every connection: under TCG on a loaded machine the banner
    // can take several seconds.
    expect(await sshBanner(sshPort, 20_000)).toMatch(/^SSH-2\.0-OpenSSH_/);
    const info = await vmInfo(VM, ctx);
    expect(info.transport).toBe('ssh');
    expect(info.ssh).toMatchObject({ host: '127.0.0.1', user: 'localvm' });
    expect(await sshBanner(info.ssh?.port ?? 0, 20_000)).toMatch(/^SSH-2\.0-OpenSSH_/);
    // The VM's key pair is its own, private to the owner; the host key is pinned.
    expect((await stat(join(dir, 'ssh_key'))).mode & 0o777).toBe(0o600);
    expect(await readFile(join(dir, 'known_hosts'), 'utf8')).toMatch(new RegExp(`^localvm-${VM} ssh-ed25519 `));
  });

  it('reaches its login prompt on the serial console', async () => {
    const consoleLog = join(dir, 'console.log');
    const deadline = performance.now() + 120_000;
    let text = '';
    while (performance.now() < deadline) {
      text = await readFile(consoleLog, 'utf8').catch(() => '');
      if (/ login: /.test(text)) break;
      await sleep(1_000);
    }
    expect(text).toMatch(new RegExp(`${VM} login: `));
  }, 180_000);

  it('exec, putFile and getFile work over SSH: as root, exit codes, stdin, byte-exact files', async () => {
    const vm = await connect(VM, ctx);
    const id = await vm.exec(['id', '-u']);
    expect([id.exitCode, id.stdout, id.stderr]).toEqual([0, '0\n', '']);
    const quoted = await vm.exec(['sh', '-c', 'printf "%s|" "$@"; exit 4', 'sh', "it's", '$HOME', 'a b'], {
      cwd: '/tmp',
      env: { K: 'v w' },
    });
    expect([quoted.exitCode, quoted.stdout]).toEqual([4, "it's|$HOME|a b|"]);
    expect((await vm.exec(['sh', '-c', 'pwd; echo "$K"'], { cwd: '/tmp', env: { K: 'v w' } })).stdout).toBe(
      '/tmp\nv w\n',
    );
    expect((await vm.exec(['cat'], { stdin: 'from stdin' })).stdout).toBe('from stdin');
    const bytes = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 7) % 256);
    await vm.putFile('/root/bytes.bin', bytes, { mode: 0o640 });
    expect(Buffer.from(await vm.getFile('/root/bytes.bin')).equals(Buffer.from(bytes))).toBe(true);
    expect((await vm.exec(['stat', '-c', '%a %U', '/root/bytes.bin'])).stdout).toBe('640 root\n');
  });

  it(
    'waits for cloud-init with ready.cloudInit()',
    async () => {
      const started = performance.now();
      await waitForVmReady(VM, { timeoutMs: BOOT_MS, strategies: [ready.ssh(), ready.cloudInit()] }, ctx);
      measured['ready → cloud-init done'] = since(started);
    },
    BOOT_MS,
  );

  it("keeps the user's own user and key next to ours: alice logs in with her key", async () => {
    const port = (await vmInfo(VM, ctx)).ssh?.port ?? 0;
    const r = ssh([
      ...['-F', '/dev/null', '-i', aliceKey, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes'],
      ...['-o', `UserKnownHostsFile=${join(dir, 'known_hosts')}`, '-o', `HostKeyAlias=localvm-${VM}`],
      ...['-o', 'StrictHostKeyChecking=yes', '-p', String(port), 'alice@127.0.0.1', 'id -un; sudo -n id -u'],
    ]);
    expect([r.status, r.stdout]).toEqual([0, 'alice\n0\n']);
    const vm = await connect(VM, ctx);
    expect((await vm.exec(['getent', 'passwd', 'alice', 'localvm'])).stdout.split('\n').length).toBe(3);
  });

  it('the CLI: exec and cp over SSH, `localvm ssh NAME -- cmd` with its exit code, ssh-config for plain ssh -F', async () => {
    expect(cliRun('exec', VM, '--', 'sh', '-c', 'echo out; exit 3')).toMatchObject({ status: 3, stdout: 'out\n' });
    const src = join(home, 'up.txt');
    await writeFile(src, 'through cp\n');
    expect(cliRun('cp', src, `${VM}:/tmp/up.txt`).status).toBe(0);
    expect(cliRun('cp', `${VM}:/tmp/up.txt`, join(home, 'down.txt')).status).toBe(0);
    expect(await readFile(join(home, 'down.txt'), 'utf8')).toBe('through cp\n');
    expect(cliRun('ssh', VM, '--', 'sh', '-c', 'id -un; exit 7')).toMatchObject({ status: 7, stdout: 'localvm\n' });
    const config = cliRun('ssh-config', VM);
    expect(config.status).toBe(0);
    await writeFile(join(home, 'ssh_config'), config.stdout);
    const r = ssh([
      '-F',
      join(home, 'ssh_config'),
      '-o',
      'BatchMode=yes',
      `localvm-${VM}`,
      'cat /etc/localvm-distro.txt',
    ]);
    expect([r.status, r.stdout]).toEqual([0, 'written by cloud-init\n']);
  }, 180_000);

  it('agent-only readiness times out and says the guest is up without an agent', async () => {
    const e = await rejection(waitForVmReady(VM, { timeoutMs: 20_000, strategies: ready.agent() }, ctx));
    expect(e.code).toBe('TIMEOUT');
    expect(e.message).toContain(AGENT_SILENT);
    expect(e.hint).toContain(AGENT_SILENT);
    // And an exec through the agent itself: its hint says the same instead of "still booting?".
    const agentOnly = (await getBackend('qemu', ctx)).transport?.(VM, 'agent');
    const x = await rejection(agentOnly?.exec(['true'], { timeoutMs: 10_000 }) ?? Promise.resolve());
    expect(x.code).toBe('TIMEOUT');
    expect(x.hint).toContain(AGENT_SILENT);
  }, 90_000);

  it('refuses a changed host key (CONFLICT), in the library, readiness and plain ssh', async () => {
    const other = join(home, 'other_host_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const otherKey = (await readFile(`${other}.pub`, 'utf8')).split(' ').slice(0, 2).join(' ');
    await writeFile(join(dir, 'known_hosts'), `localvm-${VM} ${otherKey}\n`);
    // The warm control master authenticated with the real key: stop it, so the next call connects anew.
    spawnSync('ssh', ['-F', '/dev/null', '-o', `ControlPath=${join(dir, 'ssh.sock')}`, '-O', 'exit', '127.0.0.1']);
    const vm = await connect(VM, ctx);
    expect(await codeOf(vm.exec(['true']))).toBe('CONFLICT');
    expect(await codeOf(waitForVmReady(VM, { timeoutMs: 20_000, strategies: ready.ssh() }, ctx))).toBe('CONFLICT');
    expect(cliRun('ssh', VM, '--', 'true').status).not.toBe(0);
  }, 120_000);
});
