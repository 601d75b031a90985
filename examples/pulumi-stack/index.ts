/**
 * Two local VMs, a command that uses both, a file, and a data disk. `pulumi up` boots the
 * server (QEMU, or OrbStack on macOS), builds a template and restores the client from it,
 * attaches a standalone disk to the client, `pulumi
 * refresh` notices VMs stopped or deleted behind Pulumi's back, `pulumi destroy` removes
 * everything.
 */
import * as pulumi from '@pulumi/pulumi';
import { Disk, DiskAttachment, Template, Vm, VmCommand, VmFile } from 'localvm/pulumi';

const config = new pulumi.Config();
const prefix = config.get('prefix') ?? 'example';
const memory = config.getNumber('memory') ?? 256;

// The server's user-data is a secret: it stays encrypted in the state and never enters
// the serialized provider.
const server = new Vm('server', {
  name: `${prefix}-server`,
  image: 'tiny',
  memory,
  ports: [{ host: 18080, guest: 8080 }],
  labels: { role: 'server' },
  userData: config.getSecret('userData') ?? pulumi.secret('#cloud-config\n'),
  readiness: [{ argv: ['true'] }],
});

// A template (QEMU): a tiny guest booted once, set up, and frozen. The client is a clone of
// it: restored ready in a fraction of a boot, with its own hostname, MAC and disk overlay.
// `template: base.name` makes Pulumi build the template first and delete the clone first.
const base = new Template('base', {
  name: `${prefix}-base`,
  spec: { image: 'tiny', memory },
  setup: [['/bin/sh', '-c', 'echo "built from a template" > /etc/motd']],
});

const client = new Vm('client', {
  name: `${prefix}-client`,
  template: base.name,
  labels: { role: 'client' },
});

// A standalone data disk (QEMU) attached to the client: it outlives the client (a replaced
// client gets the same disk back), grows in place when `dataSize` grows, and is deleted only
// after its attachment, because the attachment takes the Disk's and the Vm's outputs.
const data = new Disk('data', { name: `${prefix}-data`, size: config.get('dataSize') ?? '64M' });
const dataOnClient = new DiskAttachment('data-on-client', { vm: client.name, disk: data.name });

// A file in the server, then a command in each VM; the client's command uses what the
// server's command printed, so it runs only after both VMs and the server's command exist.
const motd = new VmFile('motd', {
  vm: server.name,
  path: '/etc/motd',
  content: pulumi.interpolate`served by ${server.name}\n`,
  mode: 0o644,
});

const serverHello = new VmCommand(
  'server-hello',
  {
    vm: server.name,
    create: ['cat', '/etc/motd'],
    triggers: [motd.sha256],
  },
  { dependsOn: [motd] },
);

const clientHello = new VmCommand('client-hello', {
  vm: client.name,
  create: 'printf "%s\\n" "$GREETING" > /tmp/greeting && uname -m',
  env: { GREETING: serverHello.stdout },
  delete: ['rm', '-f', '/tmp/greeting'],
});

export const serverName = server.name;
export const serverState = server.state;
export const clientIp = client.ip4;
export const motdSha256 = motd.sha256;
export const clientArch = clientHello.stdout;
export const templateSizeBytes = base.sizeBytes;
export const dataDiskBytes = data.sizeBytes;
export const dataAttachedTo = dataOnClient.vm;
