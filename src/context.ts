/**
 * What every operation runs with: configuration, the process runner, a clock, and the
 * backends. Passed explicitly so tests and the Pulumi provider control all of it.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Backend, ConcreteBackend } from './backend.js';
import { loadConfig, type LocalVmConfig } from './config.js';
import { LocalVmError } from './errors.js';
import { createExecaRunner, type CommandRunner } from './runner.js';
import type { BackendName } from './schema.js';
import { realClock, type Clock } from './time/clock.js';

export { realClock, type Clock } from './time/clock.js';

export interface OperationContext {
  config: LocalVmConfig;
  runner: CommandRunner;
  clock: Clock;
  /** Backend instances to use instead of constructing them (tests pass fakes here). */
  backends?: Partial<Record<ConcreteBackend, Backend>> | undefined;
  log?: ((msg: string) => void) | undefined;
}

let defaults: { config: LocalVmConfig; runner: CommandRunner } | undefined;

/** The context of a plain library call: environment config and the execa runner. */
export function defaultContext(overrides: Partial<OperationContext> = {}): OperationContext {
  defaults ??= { config: loadConfig(), runner: createExecaRunner() };
  return { config: defaults.config, runner: defaults.runner, clock: realClock, ...overrides };
}

/** Fills a partial context from the defaults (what every operation does with its `ctx`). */
export function withDefaults(ctx: Partial<OperationContext> | undefined): OperationContext {
  if (ctx && ctx.config && ctx.runner && ctx.clock) return ctx as OperationContext;
  return defaultContext(ctx);
}

/** `tool`'s absolute path on the configured PATH, or undefined. */
export function findTool(config: LocalVmConfig, tool: string): string | undefined {
  for (const dir of config.searchPath.split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, tool), constants.X_OK);
      return join(dir, tool);
    } catch {
      // not here
    }
  }
  return undefined;
}

// Backends are stateless apart from in-process socket mutexes, which must be shared by
// every caller in this process: keep one instance per (config, runner) pair.
const instances = new WeakMap<LocalVmConfig, WeakMap<CommandRunner, Map<ConcreteBackend, Backend>>>();

/** The backend instance of `name` for this context. */
export async function getBackend(name: ConcreteBackend, ctx: OperationContext): Promise<Backend> {
  const injected = ctx.backends?.[name];
  if (injected) return injected;
  let byRunner = instances.get(ctx.config);
  if (!byRunner) instances.set(ctx.config, (byRunner = new WeakMap()));
  let byName = byRunner.get(ctx.runner);
  if (!byName) byRunner.set(ctx.runner, (byName = new Map()));
  let backend = byName.get(name);
  if (!backend) {
    const options = { config: ctx.config, runner: ctx.runner, log: ctx.log };
    backend =
      name === 'qemu'
        ? (await import('./backends/qemu/index.js')).createQemuBackend(options)
        : (await import('./backends/orbstack/index.js')).createOrbstackBackend(options);
    byName.set(name, backend);
  }
  return backend;
}

/** True when the orbstack backend can be asked about VMs (orbctl on PATH, or injected). */
export function orbstackAvailable(ctx: OperationContext): boolean {
  return Boolean(ctx.backends?.orbstack) || findTool(ctx.config, 'orbctl') !== undefined;
}

/**
 * The backend a spec asks for. `auto` picks OrbStack on macOS when `orbctl` is on PATH
 * (the most pleasant Linux machines there), QEMU everywhere else; the reason says which.
 */
export async function resolveBackend(
  requested: BackendName,
  ctx: OperationContext,
): Promise<{ backend: Backend; reason: string }> {
  if (requested === 'qemu' || requested === 'orbstack') {
    if (requested === 'orbstack' && !orbstackAvailable(ctx)) {
      throw new LocalVmError('TOOL_NOT_FOUND', 'the orbstack backend needs orbctl on PATH', {
        hint: 'install OrbStack (macOS) from orbstack.dev, or use --backend qemu',
      });
    }
    return { backend: await getBackend(requested, ctx), reason: `backend ${requested} was asked for` };
  }
  if (ctx.config.platform === 'darwin' && orbstackAvailable(ctx)) {
    return { backend: await getBackend('orbstack', ctx), reason: 'auto: macOS with orbctl on PATH' };
  }
  const why = ctx.config.platform === 'darwin' ? 'auto: orbctl not on PATH' : `auto: ${ctx.config.platform} host`;
  return { backend: await getBackend('qemu', ctx), reason: `${why}, using qemu` };
}

/** Every backend that may hold VMs in this context, QEMU first. */
export async function availableBackends(ctx: OperationContext): Promise<Backend[]> {
  const list = [await getBackend('qemu', ctx)];
  if (orbstackAvailable(ctx)) list.push(await getBackend('orbstack', ctx));
  return list;
}
