import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  classifySshFailure,
  configValue,
  controlPathFor,
  keygenCommand,
  remoteCommand,
  sshConfigStanza,
  sshExecCommand,
  sshInteractiveCommand,
  type SshTarget,
} from '../../src/backends/qemu/ssh/argv.js';
import { shellQuote } from '../../src/argv.js';
import { decidedTransport, raceProbes } from '../../src/backends/qemu/ssh/choose.js';
import { planSsh, withFreeSshPort } from '../../src/backends/qemu/ssh/plan.js';
import { preferredSshPort, SSH_PORT_RANGE } from '../../src/backends/qemu/ssh/port.js';
import type { VmRecord } from '../../src/backends/qemu/state.js';
import { sshGuestArgv } from '../../src/backends/qemu/ssh/transport.js';
import {
  definesUsers,
  MERGE_HOW,
  mergeUserData,
  sshCloudConfig,
  userDataContentType,
} from '../../src/backends/qemu/ssh/userData.js';
import { LocalVmError } from '../../src/errors.js';
import { ownedNames } from '../../src/operations/doctor/classifyVm.js';
import { parseVmSpec, specFingerprint } from '../../src/schema.js';
import { codeOf, codeOfSync } from '../fixtures/rejection.js';

const target: SshTarget = {
  name: 'web',
  port: 40022,
  user: 'localvm',
  keyFile: '/state/vms/web/ssh_key',
  knownHosts: '/state/vms/web/known_hosts',
  controlPath: '/state/vms/web/ssh.sock',
};
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx2e1g8ZmVha2VrZXlmb3J0ZXN0aW5nb25seQ localvm-web';

/** The value given to `-o NAME=`, from an argv. */
const option = (args: string[], name: string) =>
  args.filter((_, i) => args[i - 1] === '-o').find((v) => v.startsWith(`${name}=`));

describe('ssh argv', () => {
  it('pins the host key once known, learns it (accept-new) before, and never reads ~/.ssh/config', () => {
    const before = sshExecCommand(target, ['true'], { pinned: false }).args;
    const after = sshExecCommand(target, ['true'], { pinned: true }).args;
    expect(option(before, 'StrictHostKeyChecking')).toBe('StrictHostKeyChecking=accept-new');
    expect(option(after, 'StrictHostKeyChecking')).toBe('StrictHostKeyChecking=yes');
    for (const args of [before, after]) {
      expect(args.slice(0, 2)).toEqual(['-F', '/dev/null']);
      expect(option(args, 'BatchMode')).toBe('BatchMode=yes');
      expect(option(args, 'IdentitiesOnly')).toBe('IdentitiesOnly=yes');
      expect(option(args, 'UserKnownHostsFile')).toBe('UserKnownHostsFile=/state/vms/web/known_hosts');
      expect(option(args, 'HostKeyAlias')).toBe('HostKeyAlias=localvm-web');
      expect(option(args, 'ControlPath')).toBe('ControlPath=/state/vms/web/ssh.sock');
      expect(option(args, 'ControlMaster')).toBe('ControlMaster=auto');
    }
  });

  it('connects to 127.0.0.1 on the forwarded port as the VM user, the remote command after --', () => {
    const { file, args } = sshExecCommand(target, ['echo', 'a b'], { pinned: true, connectTimeoutS: 2.5 });
    expect(file).toBe('ssh');
    expect(args.slice(-6)).toEqual(['-l', 'localvm', '-T', '127.0.0.1', '--', "echo 'a b'"]);
    expect(args[args.indexOf('-p') + 1]).toBe('40022');
    expect(option(args, 'ConnectTimeout')).toBe('ConnectTimeout=3');
  });

  it('quotes every argv element so the remote shell sees exactly those words', () => {
    expect(shellQuote('plain/path-1.txt')).toBe('plain/path-1.txt');
    expect(shellQuote('')).toBe("''");
    expect(shellQuote("it's")).toBe("'it'\\''s'");
    expect(remoteCommand(['sh', '-c', 'echo $HOME; rm -rf /', 'x`y`', '*'])).toBe(
      "sh -c 'echo $HOME; rm -rf /' 'x`y`' '*'",
    );
  });

  it('escapes % and quotes blanks in ssh_config values, and refuses a quote', () => {
    expect(configValue('/a/100%/b c')).toBe('"/a/100%%/b c"');
    expect(codeOfSync(() => configValue('/a/"b'))).toBe('VALIDATION');
  });

  it('interactive: a TTY only when asked, a login shell without a command, never batch mode', () => {
    const login = sshInteractiveCommand(target, [], { pinned: true, tty: true }).args;
    expect(login.slice(-2)).toEqual(['-t', '127.0.0.1']);
    expect(option(login, 'BatchMode')).toBeUndefined();
    const cmd = sshInteractiveCommand(target, ['ls', '-l'], { pinned: true, tty: false }).args;
    expect(cmd.slice(-4)).toEqual(['-T', '127.0.0.1', '--', 'ls -l']);
  });

  it('puts the control socket in the VM dir unless its path is too long for a unix socket', () => {
    expect(controlPathFor('/s/vms/a', '/run/l')).toBe('/s/vms/a/ssh.sock');
    const long = `/s/${'d'.repeat(90)}/vms/a`;
    expect(controlPathFor(long, '/run/l')).toMatch(/^\/run\/l\/[0-9a-f]{12}\/ssh\.sock$/);
    expect(controlPathFor(long, '/run/l')).toBe(controlPathFor(long, '/run/l'));
  });

  it('ssh-config: a stanza plain ssh reads, with the VM key and only its pinned host key', () => {
    expect(sshConfigStanza(target)).toBe(
      [
        'Host localvm-web',
        '  HostName 127.0.0.1',
        '  Port 40022',
        '  User localvm',
        '  IdentityFile /state/vms/web/ssh_key',
        '  IdentitiesOnly yes',
        '  UserKnownHostsFile /state/vms/web/known_hosts',
        '  StrictHostKeyChecking yes',
        '  HostKeyAlias localvm-web',
        '  CheckHostIP no',
        '  PreferredAuthentications publickey',
        '  LogLevel ERROR',
        '',
      ].join('\n'),
    );
  });

  it('tells a changed host key, a refused key and an unreachable server apart (exit 255 only)', () => {
    // Captured from OpenSSH 9.2 against the Debian guest.
    const changed =
      '@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n' +
      'Host key for localvm-web has changed and you have requested strict checking.\nHost key verification failed.\n';
    expect(classifySshFailure(255, changed)).toBe('host-key-changed');
    expect(classifySshFailure(255, 'localvm@127.0.0.1: Permission denied (publickey).\n')).toBe('auth');
    expect(classifySshFailure(255, 'kex_exchange_identification: read: Connection reset by peer\n')).toBe('connect');
    expect(classifySshFailure(255, 'ssh: connect to host 127.0.0.1 port 40022: Connection refused\n')).toBe('connect');
    expect(classifySshFailure(1, 'Permission denied')).toBeUndefined();
    expect(classifySshFailure(255, 'my own program failed with 255\n')).toBeUndefined();
  });

  it('generates an ed25519 key without a passphrase through ssh-keygen', () => {
    expect(keygenCommand('/d/ssh_key', 'localvm-web')).toEqual({
      file: 'ssh-keygen',
      args: ['-q', '-t', 'ed25519', '-N', '', '-C', 'localvm-web', '-f', '/d/ssh_key'],
    });
  });

  it('runs guest commands as root through sudo, with the agent transport’s cwd/env/user wrapping', () => {
    expect(sshGuestArgv(['id'], {})).toEqual(['sudo', '-n', '--', 'id']);
    expect(sshGuestArgv(['pwd'], { cwd: '/tmp', env: { A: '1' } })).toEqual([
      'sudo',
      '-n',
      '--',
      '/bin/sh',
      '-c',
      'cd "$1" || exit 126; shift; exec "$@"',
      'sh',
      '/tmp',
      'env',
      'A=1',
      'pwd',
    ]);
  });
});

describe('user-data merged with the SSH key', () => {
  const boundaryOf = (m: string) => /boundary="([^"]+)"/.exec(m)?.[1] ?? '';
  const partsOf = (m: string) => m.split(`--${boundaryOf(m)}`).slice(1, -1);

  it("puts the user's cloud-config first, untouched, and ours after it with append/no_replace merging", () => {
    const user = '#cloud-config\nusers:\n  - name: alice\n    ssh_authorized_keys: [ssh-ed25519 AAAA alice]\n';
    const merged = mergeUserData(user, KEY);
    expect(merged.startsWith('Content-Type: multipart/mixed; boundary="localvm-')).toBe(true);
    const parts = partsOf(merged);
    expect(parts).toHaveLength(2);
    expect(parts[0]).toContain('Content-Type: text/cloud-config');
    expect(parts[0]).toContain(`\n\n${user.trimEnd()}\n`);
    expect(parts[0]).not.toContain('Merge-Type');
    expect(parts[1]).toContain(`Merge-Type: ${MERGE_HOW}`);
    expect(parts[1]).toContain(sshCloudConfig(KEY).trimEnd());
    expect(merged.trimEnd().endsWith(`--${boundaryOf(merged)}--`)).toBe(true);
  });

  it('ours adds the localvm user with the key and passwordless sudo, and merges by appending', () => {
    const ours = sshCloudConfig(KEY);
    expect(ours.split('\n')[0]).toBe('#cloud-config');
    expect(ours).toContain('  - name: localvm\n');
    expect(ours).toContain(`      - "${KEY}"\n`);
    expect(ours).toContain("sudo: 'ALL=(ALL) NOPASSWD:ALL'");
    expect(ours).toContain('\nmanage_etc_hosts: localhost\n');
    expect(ours).toContain('    settings: [append]');
    expect(ours).toContain('    settings: [no_replace, recurse_list]');
    expect(() => sshCloudConfig('ssh-ed25519 AAA\nruncmd: [reboot]')).toThrow();
  });

  it('without user-data the message holds only our part; the same inputs give the same bytes', () => {
    expect(partsOf(mergeUserData(undefined, KEY))).toHaveLength(1);
    expect(mergeUserData('#cloud-config\n{}\n', KEY)).toBe(mergeUserData('#cloud-config\n{}\n', KEY));
  });

  it("keeps cloud-init's default user unless the user's user-data has a users list of its own", () => {
    const usersOf = (m: string) => (partsOf(m).at(-1) ?? '').split('\nusers:\n')[1]?.split('\n')[0];
    expect(usersOf(mergeUserData(undefined, KEY))).toBe('  - default');
    expect(usersOf(mergeUserData('#cloud-config\nruncmd: [true]\n', KEY))).toBe('  - default');
    expect(usersOf(mergeUserData('#!/bin/sh\necho hi\n', KEY))).toBe('  - default');
    expect(usersOf(mergeUserData('#cloud-config\nusers:\n  - name: alice\n', KEY))).toBe('  - name: localvm');
    expect(definesUsers('#cloud-config\nwrite_files: []\n# users: no\n')).toBe(false);
  });

  it('a boundary never occurs inside a part', () => {
    const first = mergeUserData(undefined, KEY);
    const sneaky = `#!/bin/sh\necho --${boundaryOf(first)}\n`;
    const merged = mergeUserData(sneaky, KEY);
    expect(partsOf(merged)).toHaveLength(2);
  });

  it('types each kind of user-data as cloud-init does, and nests a MIME message whole', () => {
    expect(userDataContentType('#!/bin/sh\necho hi')).toBe('text/x-shellscript');
    expect(userDataContentType('#cloud-config\n')).toBe('text/cloud-config');
    expect(userDataContentType('#include\nhttp://x')).toBe('text/x-include-url');
    expect(userDataContentType('#cloud-boothook\n')).toBe('text/cloud-boothook');
    expect(userDataContentType('## template: jinja\n#cloud-config')).toBe('text/jinja2');
    const mime =
      'Content-Type: multipart/mixed; boundary="u"\nMIME-Version: 1.0\n\n--u\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n--u--\n';
    expect(userDataContentType(mime)).toBe('message/rfc822');
    const parts = partsOf(mergeUserData(mime, KEY));
    expect(parts[0]).toBe(`\n${mime.trimEnd()}\n`);
  });
});

describe('transport choice', () => {
  const spec = (transport?: 'auto' | 'agent' | 'ssh') =>
    parseVmSpec({ name: 'a', ...(transport ? { transport } : {}) });
  const ssh = { port: 1, user: 'localvm', keyFile: '/k', knownHosts: '/h' };

  it('follows the spec, uses the agent without SSH, and auto remembers what answered first', () => {
    expect(decidedTransport({ spec: spec('ssh'), ssh })).toBe('ssh');
    expect(decidedTransport({ spec: spec('agent'), ssh })).toBe('agent');
    expect(decidedTransport({ spec: spec(), ssh: undefined })).toBe('agent');
    expect(decidedTransport({ spec: spec(), ssh })).toBeUndefined();
    expect(decidedTransport({ spec: spec('auto'), ssh, transport: 'ssh' })).toBe('ssh');
  });

  it('the first ready probe wins without waiting for the other; none ready gives both details', async () => {
    const never = () => new Promise<never>(() => undefined);
    expect(
      await raceProbes([
        { kind: 'agent', probe: never },
        { kind: 'ssh', probe: async () => ({ ready: true, detail: 'ssh answered' }) },
      ]),
    ).toEqual({ winner: 'ssh', result: { ready: true, detail: 'ssh answered' } });
    const none = await raceProbes([
      { kind: 'agent', probe: async () => ({ ready: false, detail: 'no reply in 10 s' }) },
      { kind: 'ssh', probe: async () => Promise.reject(new Error('refused')) },
    ]);
    expect(none.winner).toBeUndefined();
    expect(none.result.detail).toBe('agent: no reply in 10 s; ssh: refused');
  });

  it('a refused host key ends the race', async () => {
    const p = raceProbes([
      { kind: 'agent', probe: () => new Promise<never>(() => undefined) },
      {
        kind: 'ssh',
        probe: async () =>
          Promise.reject(new LocalVmError('CONFLICT', 'host key changed', { details: { hostKeyRefused: true } })),
      },
    ]);
    expect(await codeOf(p)).toBe('CONFLICT');
    // Any other CONFLICT (the VM stopped meanwhile) is just a probe that did not answer.
    const stopped = await raceProbes([
      { kind: 'agent', probe: async () => ({ ready: false, detail: 'process not running' }) },
      { kind: 'ssh', probe: async () => Promise.reject(new LocalVmError('CONFLICT', 'VM a is not running')) },
    ]);
    expect(stopped.result.detail).toBe('agent: process not running; ssh: VM a is not running');
  });

  it('transport is validated, and only agent/ssh change the fingerprint (auto keeps old ones)', () => {
    expect(codeOfSync(() => parseVmSpec({ name: 'a', transport: 'telnet' }))).toBe('VALIDATION');
    expect(specFingerprint(spec('auto'))).toBe(specFingerprint(spec()));
    expect(specFingerprint(spec('ssh'))).not.toBe(specFingerprint(spec()));
  });
});

describe('planning SSH access', () => {
  it('a disk-image VM gets it unless transport is agent; tiny only refuses an explicit ssh', async () => {
    const auto = await planSsh(parseVmSpec({ name: 'a', image: '/img.qcow2' }), '/d', true);
    expect(auto).toMatchObject({ user: 'localvm', keyFile: '/d/ssh_key', knownHosts: '/d/known_hosts' });
    // The same port on every plan of the VM (a dry run shows what the create uses), below the ephemeral range.
    expect(auto?.port).toBe((await planSsh(parseVmSpec({ name: 'a', image: '/img.qcow2' }), '/d', true))?.port);
    expect(auto?.port).toBe(preferredSshPort('/d'));
    expect(preferredSshPort('/d')).toBeGreaterThanOrEqual(SSH_PORT_RANGE.first);
    expect(preferredSshPort('/d')).toBeLessThan(32_768);
    expect(preferredSshPort('/e')).not.toBe(preferredSshPort('/d'));
    expect(await planSsh(parseVmSpec({ name: 'a', image: '/img.qcow2', transport: 'agent' }), '/d', true)).toBe(
      undefined,
    );
    expect(await planSsh(parseVmSpec({ name: 'a' }), '/d', false)).toBeUndefined();
    expect(await codeOf(planSsh(parseVmSpec({ name: 'a', transport: 'ssh' }), '/d', false))).toBe('VALIDATION');
  });

  it('a stopped VM whose recorded SSH port was taken starts on a new one', async () => {
    const server = createServer();
    const taken = await new Promise<number>((resolve) =>
      server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
    );
    try {
      const record = {
        paths: { dir: '/s/vms/a' },
        ssh: { port: taken, user: 'localvm', keyFile: '/k', knownHosts: '/h' },
      } as VmRecord;
      const moved = await withFreeSshPort(record);
      expect(moved.ssh?.port).not.toBe(taken);
      expect({ ...moved.ssh, port: 0 }).toEqual({ ...record.ssh, port: 0 });
      const free = { ...record, ssh: { ...record.ssh, port: moved.ssh?.port ?? 0 } } as VmRecord;
      expect(await withFreeSshPort(free)).toBe(free);
    } finally {
      server.close();
    }
  });
});

describe('doctor and SSH files', () => {
  it("counts the VM's key pair, known_hosts and control socket as the record's own files", () => {
    const dir = '/s/vms/web';
    const record = {
      boot: { kind: 'kernel', kernel: '/k' },
      disks: [],
      paths: { qmpSocket: `${dir}/qmp.sock`, qgaSocket: `${dir}/qga.sock` },
      ssh: { port: 1, user: 'localvm', keyFile: `${dir}/ssh_key`, knownHosts: `${dir}/known_hosts` },
    } as unknown as VmRecord;
    const owned = ownedNames(record, dir);
    for (const f of ['ssh_key', 'ssh_key.pub', 'known_hosts', 'ssh.sock']) expect(owned.has(f)).toBe(true);
    expect(ownedNames({ ...record, ssh: undefined }, dir).has('ssh_key')).toBe(false);
  });
});
