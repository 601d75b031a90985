/**
 * `orbctl` command builders: typed options in, `{ file, args }` out. Pure: no I/O, no
 * environment reads, never a shell string. Every orbctl flag localvm uses is spelled here,
 * so an OrbStack version that renames one is fixed in one place.
 */
import { invalid, positional } from '../../argv.js';
import type { Command } from '../../runner.js';

export type OrbArch = 'amd64' | 'arm64';
export type OrbConfigKey = 'username' | 'cpu' | 'memory_mib' | 'disk_bytes';
const ORB_CONFIG_KEYS: ReadonlySet<string> = new Set<OrbConfigKey>(['username', 'cpu', 'memory_mib', 'disk_bytes']);

export interface OrbctlBuilders {
  create(o: { image: string; name: string; arch?: OrbArch; user?: string; userDataFile?: string }): Command;
  list(o?: { runningOnly?: boolean }): Command;
  info(name: string): Command;
  start(name: string): Command;
  stop(name: string, o?: { force?: boolean }): Command;
  restart(name: string): Command;
  delete(name: string, o?: { force?: boolean }): Command;
  run(o: { machine: string; argv: string[]; user?: string; workdir?: string }): Command;
  push(o: { machine: string; local: string; remote?: string }): Command;
  pull(o: { machine: string; remote: string; local?: string }): Command;
  clone(source: string, target: string): Command;
  configGet(machine: string, key: OrbConfigKey): Command;
  configSet(machine: string, key: OrbConfigKey, value: string | number): Command;
}

/** `machine.NAME.KEY`: a dot in the name would address a different key. */
function orbConfigKey(machine: string, key: string): string {
  positional('machine', machine);
  if (machine.includes('.')) throw invalid('machine', 'must not contain "."');
  if (!ORB_CONFIG_KEYS.has(key)) throw invalid('key', `must be one of ${[...ORB_CONFIG_KEYS].join(', ')}`);
  return `machine.${machine}.${key}`;
}

/**
 * Builders for `orbctl` invoked as `binary` (default `orbctl`; tests point it at a
 * simulator). Flags follow the documented CLI; version-dependent flags are not used.
 */
export function createOrbctl(binary = 'orbctl'): OrbctlBuilders {
  const cmd = (args: string[]): Command => ({ file: binary, args });
  return {
    create(o) {
      const args = ['create'];
      if (o.arch !== undefined) {
        if (o.arch !== 'amd64' && o.arch !== 'arm64') throw invalid('arch', 'must be amd64 or arm64');
        args.push('-a', o.arch);
      }
      if (o.user !== undefined) args.push('-u', positional('user', o.user));
      if (o.userDataFile !== undefined) args.push('-c', positional('userDataFile', o.userDataFile));
      args.push(positional('image', o.image), positional('name', o.name));
      return cmd(args);
    },
    list(o = {}) {
      return cmd(o.runningOnly ? ['list', '-r', '-f', 'json'] : ['list', '-f', 'json']);
    },
    info(name) {
      return cmd(['info', positional('name', name), '-f', 'json']);
    },
    start(name) {
      return cmd(['start', positional('name', name)]);
    },
    stop(name, o = {}) {
      return cmd(o.force ? ['stop', '-f', positional('name', name)] : ['stop', positional('name', name)]);
    },
    restart(name) {
      return cmd(['restart', positional('name', name)]);
    },
    delete(name, o = {}) {
      return cmd(o.force ? ['delete', '-f', positional('name', name)] : ['delete', positional('name', name)]);
    },
    run(o) {
      if (!Array.isArray(o.argv) || o.argv.length === 0) throw invalid('argv', 'must name a command');
      const args = ['run', '-m', positional('machine', o.machine)];
      if (o.user !== undefined) args.push('-u', positional('user', o.user));
      if (o.workdir !== undefined) args.push('-w', positional('workdir', o.workdir));
      // Only the program name is checked: later arguments belong to the guest command, and
      // orbctl stops parsing its own flags at the first positional.
      positional('argv.0', o.argv[0] as string);
      for (const a of o.argv) if (typeof a !== 'string') throw invalid('argv', 'must be strings');
      args.push(...o.argv);
      return cmd(args);
    },
    push(o) {
      const args = ['push', '-m', positional('machine', o.machine), positional('local', o.local)];
      if (o.remote !== undefined) args.push(positional('remote', o.remote));
      return cmd(args);
    },
    pull(o) {
      const args = ['pull', '-m', positional('machine', o.machine), positional('remote', o.remote)];
      if (o.local !== undefined) args.push(positional('local', o.local));
      return cmd(args);
    },
    clone(source, target) {
      return cmd(['clone', positional('source', source), positional('target', target)]);
    },
    configGet(machine, key) {
      return cmd(['config', 'get', orbConfigKey(machine, key)]);
    },
    configSet(machine, key, value) {
      if (typeof value === 'number' && !(Number.isSafeInteger(value) && value >= 0))
        throw invalid('value', 'must be a non-negative integer');
      const text = String(value);
      if (text.length === 0) throw invalid('value', 'must not be empty');
      return cmd(['config', 'set', orbConfigKey(machine, key), positional('value', text)]);
    },
  };
}

/** `orbctl` command builders (the binary found on PATH as `orbctl`). */
export const orbctl: OrbctlBuilders = createOrbctl();
