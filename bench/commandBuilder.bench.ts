/**
 * How much do the pure command builders cost over writing the argv by hand?
 *
 * For each command: the floor (a function returning a fresh array literal of the same argv,
 * read from the same input object), the builder, and the validated path (parseVmSpec, then
 * the builder). Each sample runs BATCH calls so that timer overhead does not swamp ~100 ns
 * operations, and every result is kept in a ring so V8 cannot elide the allocations.
 *
 * Run: npx tsx bench/commandBuilder.bench.ts   (writes bench/results/commandBuilder.json)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { Bench } from 'tinybench';
import { buildQemuCommand, type QemuLaunch } from '../src/backends/qemu/cmdline.js';
import { orbctl } from '../src/backends/orbstack/cmdline.js';
import { qemuImg } from '../src/backends/qemu/qemuImg.js';
import { type Command } from '../src/runner.js';
import { parseVmSpec, type VmSpec, type VmSpecInput } from '../src/schema.js';

const BATCH = 1000;
const keep: Command[] = new Array<Command>(64);
let slot = 0;
const retain = (c: Command): void => {
  keep[slot++ & 63] = c;
};

// ---- inputs ------------------------------------------------------------------------------

const createOpts = { image: 'ubuntu:noble', name: 'web-1', arch: 'arm64' as const, user: 'dev' };
const runOpts = { machine: 'web-1', argv: ['sh', '-c', 'uname -a'], user: 'root', workdir: '/srv' };
const imgOpts = {
  path: '/var/lib/localvm/web-1/root.qcow2',
  size: 10 * 1024 ** 3,
  backing: { path: '/var/cache/localvm/debian.qcow2', format: 'qcow2' as const },
};
const dir = '/run/localvm/web-1';
const launch: QemuLaunch = {
  name: 'web-1',
  arch: 'x86_64',
  accel: 'tcg',
  cpus: 2,
  memory: 512,
  boot: {
    kind: 'kernel',
    kernel: '/cache/vmlinux',
    initrd: '/cache/initramfs.gz',
    append: 'console=ttyS0 quiet acpi=noirq panic=-1',
  },
  ports: [
    { host: 2222, guest: 22, protocol: 'tcp', bind: '127.0.0.1' },
    { host: 8080, guest: 80, protocol: 'tcp', bind: '127.0.0.1' },
  ],
  isolated: true,
  disks: [{ id: 'data', path: `${dir}/data.qcow2`, format: 'qcow2' }],
  paths: {
    dir,
    qmpSocket: `${dir}/qmp.sock`,
    qgaSocket: `${dir}/qga.sock`,
    consoleLog: `${dir}/console.log`,
    pidFile: `${dir}/qemu.pid`,
  },
};
const specInput: VmSpecInput = {
  name: 'web-1',
  backend: 'qemu',
  image: 'ubuntu:noble',
  kernel: '/cache/vmlinux',
  initrd: '/cache/initramfs.gz',
  append: 'console=ttyS0 quiet acpi=noirq panic=-1',
  arch: 'x86_64',
  accel: 'tcg',
  cpus: 2,
  memory: 512,
  user: 'dev',
  diskSize: '10G',
  disks: [{ name: 'data', size: '1G' }],
  ports: [
    { host: 2222, guest: 22 },
    { host: 8080, guest: 80 },
  ],
  isolated: true,
};

// ---- floors: the same argv written out by hand -------------------------------------------

const floorCreate = (o: typeof createOpts): Command => ({
  file: 'orbctl',
  args: ['create', '-a', o.arch, '-u', o.user, o.image, o.name],
});
const floorRun = (o: typeof runOpts): Command => ({
  file: 'orbctl',
  args: ['run', '-m', o.machine, '-u', o.user, '-w', o.workdir, ...o.argv],
});
const floorImg = (o: typeof imgOpts): Command => ({
  file: 'qemu-img',
  args: ['create', '-f', 'qcow2', '-b', o.backing.path, '-F', o.backing.format, o.path, String(o.size)],
});
const floorQemu = (l: QemuLaunch): Command => {
  const boot = l.boot as Extract<QemuLaunch['boot'], { kind: 'kernel' }>;
  const [p0, p1] = l.ports as [QemuLaunch['ports'][number], QemuLaunch['ports'][number]];
  const [d0] = l.disks as [QemuLaunch['disks'][number]];
  return {
    file: `qemu-system-${l.arch}`,
    args: [
      '-name',
      l.name,
      '-accel',
      'tcg,tb-size=64',
      '-m',
      String(l.memory),
      '-smp',
      String(l.cpus),
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-kernel',
      boot.kernel,
      '-initrd',
      boot.initrd as string,
      '-append',
      boot.append as string,
      '-serial',
      `file:${l.paths.consoleLog}`,
      '-qmp',
      `unix:${l.paths.qmpSocket},server=on,wait=off`,
      '-chardev',
      `socket,path=${l.paths.qgaSocket},server=on,wait=off,id=qga0`,
      '-device',
      'virtio-serial-pci',
      '-device',
      'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0',
      '-netdev',
      `user,id=n0,restrict=on,hostfwd=${p0.protocol}:${p0.bind}:${p0.host}-:${p0.guest},hostfwd=${p1.protocol}:${p1.bind}:${p1.host}-:${p1.guest}`,
      '-device',
      'virtio-net-pci,netdev=n0',
      '-device',
      'virtio-rng-pci',
      '-drive',
      `file=${d0.path},format=${d0.format},if=none,id=${d0.id}`,
      '-device',
      `virtio-blk-pci,drive=${d0.id}`,
      '-daemonize',
      '-pidfile',
      l.paths.pidFile,
    ],
  };
};

// ---- validated paths: spec in, command out ------------------------------------------------

const orbArch = (spec: VmSpec): 'amd64' | 'arm64' | undefined =>
  spec.arch === 'aarch64' ? 'arm64' : spec.arch === 'x86_64' ? 'amd64' : undefined;

function launchFromSpec(spec: VmSpec): QemuLaunch {
  return {
    name: spec.name,
    arch: spec.arch ?? 'x86_64',
    accel: spec.accel === 'auto' ? 'tcg' : spec.accel,
    cpus: spec.cpus,
    memory: spec.memory,
    boot: { kind: 'kernel', kernel: spec.kernel as string, initrd: spec.initrd, append: spec.append },
    ports: spec.ports,
    isolated: spec.isolated,
    disks: spec.disks.map((d) => ({ id: d.name, path: `${dir}/${d.name}.qcow2`, format: 'qcow2' as const })),
    paths: launch.paths,
  };
}

// Sanity: the floor and the builder must build the very same command, or the ratio is meaningless.
const pairs: [string, Command, Command][] = [
  ['orbctl create', floorCreate(createOpts), orbctl.create(createOpts)],
  ['orbctl run', floorRun(runOpts), orbctl.run(runOpts)],
  ['qemu-img create', floorImg(imgOpts), qemuImg.create(imgOpts)],
  ['qemu argv', floorQemu(launch), buildQemuCommand(launch)],
];
for (const [name, floor, built] of pairs) {
  if (JSON.stringify(floor) !== JSON.stringify(built)) throw new Error(`${name}: floor and builder differ`);
}

// ---- run ----------------------------------------------------------------------------------

const batch =
  (fn: () => Command): (() => void) =>
  () => {
    for (let i = 0; i < BATCH; i++) retain(fn());
  };

const groups: { name: string; floor: () => Command; builder: () => Command; validated: () => Command }[] = [
  {
    name: 'orbctl create',
    floor: () => floorCreate(createOpts),
    builder: () => orbctl.create(createOpts),
    validated: () => {
      const spec = parseVmSpec(specInput);
      return orbctl.create({ image: spec.image, name: spec.name, arch: orbArch(spec), user: spec.user });
    },
  },
  {
    name: 'orbctl run',
    floor: () => floorRun(runOpts),
    builder: () => orbctl.run(runOpts),
    validated: () => {
      const spec = parseVmSpec(specInput);
      return orbctl.run({ machine: spec.name, argv: runOpts.argv, user: 'root', workdir: '/srv' });
    },
  },
  {
    name: 'qemu-img create',
    floor: () => floorImg(imgOpts),
    builder: () => qemuImg.create(imgOpts),
    validated: () => {
      const spec = parseVmSpec(specInput);
      return qemuImg.create({ path: imgOpts.path, size: spec.diskSize, backing: imgOpts.backing });
    },
  },
  {
    name: 'qemu argv',
    floor: () => floorQemu(launch),
    builder: () => buildQemuCommand(launch),
    validated: () => buildQemuCommand(launchFromSpec(parseVmSpec(specInput))),
  },
];

const bench = new Bench({ time: 400, warmupTime: 100, throws: true });
for (const g of groups) {
  bench.add(`${g.name} | floor`, batch(g.floor));
  bench.add(`${g.name} | builder`, batch(g.builder));
  bench.add(`${g.name} | parseVmSpec + builder`, batch(g.validated));
}
await bench.run();

interface Row {
  name: string;
  opsPerSec: number;
  medianNs: number;
  ratioToFloor: number;
}
const rows: Row[] = [];
const floors = new Map<string, number>();
for (const task of bench.tasks) {
  const r = task.result;
  if (r.state !== 'completed') throw new Error(`${task.name}: ${r.state}`);
  // One sample is BATCH calls: scale to a single call.
  const medianNs = (r.latency.p50 * 1e6) / BATCH;
  const opsPerSec = 1e9 / medianNs;
  const group = task.name.split(' | ')[0] as string;
  if (task.name.endsWith('| floor')) floors.set(group, medianNs);
  const floorNs = floors.get(group) ?? medianNs;
  rows.push({
    name: task.name,
    opsPerSec: Math.round(opsPerSec),
    medianNs: Math.round(medianNs * 10) / 10,
    ratioToFloor: Math.round((medianNs / floorNs) * 100) / 100,
  });
}

console.table(
  rows.map((r) => ({
    name: r.name,
    'ops/s': r.opsPerSec.toLocaleString('en-US'),
    'median ns': r.medianNs,
    'x floor': r.ratioToFloor,
  })),
);

const builderRow = (g: string): Row => rows.find((r) => r.name === `${g} | builder`) as Row;
// The targets: plain builders within 3x of the floor; the full QEMU argv has an absolute
// target instead, since its floor is one literal and the builder checks ~15 values.
const checks = [
  ...['orbctl create', 'orbctl run', 'qemu-img create'].map((g) => ({
    target: `${g} builder within 3x of floor`,
    ok: builderRow(g).ratioToFloor <= 3,
  })),
  { target: 'qemu argv builder >= 200,000 ops/s', ok: builderRow('qemu argv').opsPerSec >= 200_000 },
];
for (const c of checks) console.log(`${c.ok ? 'PASS' : 'MISS'}  ${c.target}`);

const out = new URL('./results/', import.meta.url);
mkdirSync(out, { recursive: true });
writeFileSync(
  new URL('commandBuilder.json', out),
  `${JSON.stringify({ date: new Date().toISOString(), node: process.version, batch: BATCH, results: rows, targets: checks }, null, 2)}\n`,
);
