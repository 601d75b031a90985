import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';

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
});
