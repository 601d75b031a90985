/** `localvm template create|list|info|delete`: frozen, ready VMs that clones restore from. */
import { readFile } from 'node:fs/promises';
import type { Command as Commander } from 'commander';
import { LocalVmError } from '../../errors.js';
import { createTemplate, deleteTemplate, listTemplates, templateInfo } from '../../operations/template.js';
import type { VmSpecInput } from '../../schema.js';
import { formatBytes, formatRemoval, formatTable } from '../format.js';
import { buildCreateSpec } from '../parse.js';
import type { CliSession } from '../shared.js';

interface TemplateCreateOptions {
  file?: string;
  from?: string;
  image?: string;
  memory?: string;
  cpus?: string;
  setup?: string[];
}

function usage(property: string, reason: string): LocalVmError {
  return new LocalVmError('VALIDATION', `--${property} ${reason}`, { issues: [{ property, reason }] });
}

/**
 * One `--setup` value as an argv: a JSON array of strings (`'["sh","-c","echo hi"]'`), or
 * words split on white space (`'apk add curl'`). Never given to a shell.
 */
export function parseSetupArg(value: string): string[] {
  const text = value.trim();
  if (text.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw usage('setup', `is not a JSON array: ${value}`);
    }
    if (!Array.isArray(parsed) || parsed.length === 0 || !parsed.every((a) => typeof a === 'string'))
      throw usage('setup', 'must be a non-empty JSON array of strings');
    return parsed as string[];
  }
  const words = text.split(/\s+/).filter(Boolean);
  if (words.length === 0) throw usage('setup', 'must name a command');
  return words;
}

async function specFrom(name: string, o: TemplateCreateOptions): Promise<VmSpecInput> {
  const flags = buildCreateSpec(name, o, undefined);
  if (o.file === undefined) return flags;
  let fromFile: unknown;
  try {
    fromFile = JSON.parse(await readFile(o.file, 'utf8'));
  } catch (error) {
    throw new LocalVmError('VALIDATION', `${o.file} is not a readable JSON VM spec: ${(error as Error).message}`, {
      issues: [{ property: 'file', reason: 'must be a JSON VM spec' }],
    });
  }
  if (typeof fromFile !== 'object' || fromFile === null || Array.isArray(fromFile))
    throw usage('file', 'must hold a JSON object (a VM spec)');
  // Flags given on the command line win over the file.
  return { ...(fromFile as VmSpecInput), ...flags, name };
}

export function registerTemplate(program: Commander, cli: CliSession): void {
  const template = program
    .command('template')
    .description('templates: a VM booted once and frozen, restored by `create --template` in a fraction of a boot');
  template
    .command('create')
    .description(
      'boot a VM from a spec (or take a running one with --from), run the setup commands, and freeze it as a template',
    )
    .argument('<name>', 'template name (a-z, 0-9, "-")')
    .option('-f, --file <spec.json>', 'a JSON VM spec to boot (its name is ignored)')
    .option(
      '--from <vm>',
      "freeze this running VM instead of booting one: its disks become the template's and it continues as the template's clone",
    )
    .option('--image <image>', 'tiny (default) or a qcow2/raw path')
    .option('--memory <memory>', 'memory in MiB, or 512M / 2G (every clone has the same)')
    .option('--cpus <n>', 'virtual CPUs')
    .option(
      '--setup <argv>',
      'a command to run before freezing: a JSON array or plain words, no shell (repeatable)',
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .action(async (name: string, opts: TemplateCreateOptions, cmd: Commander) => {
      cli.noDryRun(cmd, 'template create');
      const setup = (opts.setup ?? []).map(parseSetupArg);
      const from = opts.from;
      if (from !== undefined && [opts.file, opts.image, opts.memory, opts.cpus].some((o) => o !== undefined))
        throw usage('from', 'takes the running VM as it is: it cannot be given with -f, --image, --memory or --cpus');
      const input = from !== undefined ? { name, from, setup } : { name, spec: await specFrom(name, opts), setup };
      const t = await cli.withProgress(
        from !== undefined ? `freezing ${from} as template ${name}` : `creating template ${name}`,
        () => createTemplate(input, cli.contextFor(cmd)),
        (r) => `frozen in ${r.createMs} ms, ${formatBytes(r.sizeBytes)} on disk`,
      );
      cli.print(cmd, t, `template ${t.name} ready: localvm create NAME --template ${t.name}\n`);
    });
  template
    .command('list')
    .description('list templates: size on disk, memory, QEMU version, clones')
    .action(async (_opts: unknown, cmd: Commander) => {
      const list = await listTemplates(cli.contextFor(cmd));
      const rows = list.map((t) => [
        t.name,
        t.image,
        `${t.memory} MiB`,
        formatBytes(t.sizeBytes),
        t.qemuVersion.replace(/^QEMU emulator version /, ''),
        t.clones.length ? t.clones.join(',') : '-',
      ]);
      cli.print(cmd, list, formatTable(['NAME', 'IMAGE', 'MEMORY', 'SIZE', 'QEMU', 'CLONES'], rows));
    });
  template
    .command('info')
    .description("a template's record: source spec, setup, QEMU version, clones")
    .argument('<name>', 'template name')
    .action(async (name: string, _opts: unknown, cmd: Commander) => {
      const t = await templateInfo(name, cli.contextFor(cmd));
      const text = [
        `name:      ${t.name}`,
        `created:   ${t.createdAt} (${t.createMs} ms)`,
        `image:     ${t.image}`,
        `memory:    ${t.memory} MiB`,
        `size:      ${formatBytes(t.sizeBytes)} (device state ${formatBytes(t.stateBytes)})`,
        `qemu:      ${t.qemuVersion}`,
        `setup:     ${t.setup.length ? t.setup.map((a) => JSON.stringify(a)).join(' ') : '-'}`,
        ...(t.from !== undefined ? [`from:      VM ${t.from}`] : []),
        `identity:  ${t.identity === 'helper' ? `${t.helper === 'program' ? 'program' : 'shell helper'} parked in the template (clones start no guest process)` : 'one agent guest-exec per clone'}`,
        `clones:    ${t.clones.length ? t.clones.join(', ') : '-'}`,
        `dir:       ${t.dir}`,
        '',
      ].join('\n');
      cli.print(cmd, t, text);
    });
  template
    .command('delete')
    .description('delete a template (refused while clones use it; succeeds when it does not exist)')
    .argument('<name>', 'template name')
    .action(async (name: string, _opts: unknown, cmd: Commander) => {
      cli.noDryRun(cmd, 'template delete');
      const { deleted } = await deleteTemplate(name, cli.contextFor(cmd));
      cli.print(cmd, { name, deleted }, formatRemoval('deleted', `template ${name}`, deleted));
    });
}
