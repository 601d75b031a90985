import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { isLocalVmError } from '../../src/errors.js';
import { testTempDir } from '../fixtures/tempDir.js';

function refusal(fn: () => unknown): { code: string; message: string; issues?: { property: string }[] } {
  try {
    fn();
  } catch (error) {
    expect(isLocalVmError(error), String(error)).toBe(true);
    return error as { code: string; message: string };
  }
  throw new Error('expected a refusal');
}

describe('loadConfig', () => {
  it('reads LOCALVM_HOME, LOCALVM_CACHE and LOCALVM_RUN_DIR as given when absolute', () => {
    const config = loadConfig({ LOCALVM_HOME: '/srv/state', LOCALVM_CACHE: '/srv/cache', LOCALVM_RUN_DIR: '/run/lv' });
    expect(config).toMatchObject({ stateDir: '/srv/state', cacheDir: '/srv/cache', runDir: '/run/lv' });
  });

  it('resolves relative LOCALVM_HOME, LOCALVM_CACHE and LOCALVM_RUN_DIR against the cwd at load', () => {
    // A relative state dir would be recorded in vm.json as is, and `list` from another
    // directory would then show nothing while the VM runs on.
    const config = loadConfig({ LOCALVM_HOME: 'state', LOCALVM_CACHE: './cache', LOCALVM_RUN_DIR: '../run' });
    expect(config.stateDir).toBe(join(process.cwd(), 'state'));
    expect(config.cacheDir).toBe(join(process.cwd(), 'cache'));
    expect(config.runDir).toBe(resolve(process.cwd(), '../run'));
  });

  it('normalises absolute paths too (no trailing slash or dot segments recorded)', () => {
    expect(loadConfig({ LOCALVM_HOME: '/srv//state/./x/../' }).stateDir).toBe('/srv/state');
  });

  it('ignores relative XDG_* directories, as the XDG base directory spec asks', () => {
    const config = loadConfig({ HOME: '/home/u', XDG_STATE_HOME: 'st', XDG_CACHE_HOME: 'ca', XDG_RUNTIME_DIR: 'ru' });
    expect(config.stateDir).toBe('/home/u/.local/state/localvm');
    expect(config.cacheDir).toBe('/home/u/.cache/localvm');
    expect(config.runDir).toBe(`/tmp/localvm-${process.getuid?.() ?? 'u'}`);
  });

  it('uses absolute XDG_* directories', () => {
    const config = loadConfig({
      HOME: '/home/u',
      XDG_STATE_HOME: '/x/st',
      XDG_CACHE_HOME: '/x/ca',
      XDG_RUNTIME_DIR: '/x/ru',
    });
    expect(config).toMatchObject({
      stateDir: '/x/st/localvm',
      cacheDir: '/x/ca/localvm',
      runDir: `/x/ru/localvm-${process.getuid?.() ?? 'u'}`,
    });
  });

  it('lets overrides win', () => {
    expect(loadConfig({ LOCALVM_HOME: 'rel' }, { stateDir: '/given' }).stateDir).toBe('/given');
  });

  it('refuses a directory setting that is a file, or below one, naming the variable', () => {
    const root = testTempDir('lvm-config-');
    const file = join(root, 'file');
    writeFileSync(file, '');
    for (const [variable, value] of [
      ['LOCALVM_HOME', file],
      ['LOCALVM_HOME', join(file, 'deeper', 'still')],
      ['LOCALVM_CACHE', file],
      ['LOCALVM_RUN_DIR', file],
    ] as const) {
      const error = refusal(() => loadConfig({ [variable]: value }));
      expect(error.code).toBe('VALIDATION');
      expect(error.issues?.map((i) => i.property)).toEqual([variable]);
      expect(error.message).toContain(`${file}`);
    }
    // The defaults are checked too, and say which variable moves them.
    const home = join(root, 'home');
    mkdirSync(join(home, '.local', 'state'), { recursive: true });
    writeFileSync(join(home, '.local', 'state', 'localvm'), '');
    expect(refusal(() => loadConfig({ HOME: home })).message).toMatch(/the default; set LOCALVM_HOME/);
  });

  it('accepts directories, missing ones, and overrides over a bad variable', () => {
    const root = testTempDir('lvm-config-');
    expect(loadConfig({ LOCALVM_HOME: root, LOCALVM_CACHE: join(root, 'missing', 'cache') }).stateDir).toBe(root);
    const file = join(root, 'file');
    writeFileSync(file, '');
    expect(loadConfig({ LOCALVM_HOME: file }, { stateDir: root }).stateDir).toBe(root);
  });
});
