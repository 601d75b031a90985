/**
 * What every operation runs with: configuration, the process runner, a clock, and the
 * backends. Passed explicitly so tests and the Pulumi provider control all of it.
 */
import type { Backend } from './backend.js';
import './backends/builtin.js';
import {
  backendChoices,
  backendDriver,
  backendDrivers,
  type Availability,
  type BackendDriver,
} from './backends/registry.js';
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
  backends?: Partial<Record<string, Backend>> | undefined;
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

// Backends are stateless apart from in-process socket mutexes, which must be shared by
// every caller in this process: keep one instance per (config, runner) pair.
const instances = new WeakMap<LocalVmConfig, WeakMap<CommandRunner, Map<string, Backend>>>();

function driverOrThrow(name: string): BackendDriver {
  const driver = backendDriver(name);
  if (!driver) {
    throw new LocalVmError('VALIDATION', `unknown backend ${JSON.stringify(name)}`, {
      issues: [{ property: 'backend', reason: `must be one of ${backendChoices().join(', ')}` }],
    });
  }
  return driver;
}

/** The backend instance of `name` for this context. */
export async function getBackend(name: string, ctx: OperationContext): Promise<Backend> {
  const injected = ctx.backends?.[name];
  if (injected) return injected;
  const driver = driverOrThrow(name);
  let byRunner = instances.get(ctx.config);
  if (!byRunner) instances.set(ctx.config, (byRunner = new WeakMap()));
  let byName = byRunner.get(ctx.runner);
  if (!byName) byRunner.set(ctx.runner, (byName = new Map()));
  let backend = byName.get(name);
  if (!backend) {
    backend = await driver.create({ config: ctx.config, runner: ctx.runner, log: ctx.log, clock: ctx.clock });
    byName.set(name, backend);
  }
  return backend;
}

/** Whether backend `name` can be used in this context (injected backends always can). */
export function backendAvailability(name: string, ctx: OperationContext): Availability {
  if (ctx.backends?.[name]) return { available: true, reason: `${name} backend given by the caller` };
  return driverOrThrow(name).availability(ctx.config);
}

/**
 * The backend a spec asks for. `auto` sends an image embedded in one backend (`tiny`) to that
 * backend, and otherwise picks the available backend that ranks highest on this host and
 * accepts the image (OrbStack on macOS with `orbctl`, QEMU elsewhere); the reason says why.
 */
export async function resolveBackend(
  requested: BackendName,
  ctx: OperationContext,
  image?: string,
  placement?: { host?: string | undefined; connect?: string | undefined },
): Promise<{ backend: Backend; reason: string }> {
  if (placement?.host !== undefined || placement?.connect !== undefined) return placedBackend(requested, ctx);
  if (requested !== 'auto') {
    const availability = backendAvailability(requested, ctx);
    if (!availability.available) {
      throw new LocalVmError('TOOL_NOT_FOUND', `the ${requested} backend cannot run here: ${availability.reason}`, {
        hint: availability.hint,
      });
    }
    return { backend: await getBackend(requested, ctx), reason: `backend ${requested} was asked for` };
  }
  const embedding = image === undefined ? undefined : backendDrivers().find((d) => d.embeddedImages?.includes(image));
  if (embedding) {
    return {
      backend: await getBackend(embedding.name, ctx),
      reason: `auto: image ${image} is embedded in the ${embedding.name} backend`,
    };
  }
  const candidates = backendDrivers()
    .map((driver) => ({
      driver,
      availability: backendAvailability(driver.name, ctx),
      rank: driver.autoRank(ctx.config),
    }))
    .filter((c) => c.rank !== undefined && (image === undefined || (c.driver.acceptsImage?.(image) ?? true)));
  const usable = candidates.filter((c) => c.availability.available).sort((a, b) => (b.rank ?? 0) - (a.rank ?? 0));
  const chosen = usable[0];
  if (!chosen) {
    throw new LocalVmError('TOOL_NOT_FOUND', `no backend can run ${image ?? 'a VM'} on this host`, {
      hint: candidates.map((c) => `${c.driver.name}: ${c.availability.reason}`).join('; ') || undefined,
    });
  }
  const passedOver = candidates
    .filter((c) => c !== chosen && (c.rank ?? 0) > (chosen.rank ?? 0))
    .map((c) => `${c.driver.name}: ${c.availability.reason}`);
  const why = passedOver.length ? passedOver.join(', ') : `${ctx.config.platform} host`;
  return {
    backend: await getBackend(chosen.driver.name, ctx),
    reason: `auto: ${why}, using ${chosen.driver.name} (${chosen.availability.reason})`,
  };
}

/**
 * The backend of a spec naming a host or connection URI: one that places VMs on hosts. Under
 * `auto` the first such backend; a backend without hosts is VALIDATION (the host would be
 * silently ignored otherwise).
 */
async function placedBackend(
  requested: BackendName,
  ctx: OperationContext,
): Promise<{ backend: Backend; reason: string }> {
  const withHosts = backendDrivers().filter((d) => d.hosts);
  const names = withHosts.map((d) => d.name).join(' or ') || 'a backend with hosts';
  if (requested === 'auto') {
    const driver = withHosts[0];
    if (!driver) throw new LocalVmError('UNSUPPORTED', 'no backend places VMs on hosts here (host/connect given)');
    return resolveBackend(driver.name, ctx).then((r) => ({
      ...r,
      reason: `auto: host/connect given, using ${driver.name}`,
    }));
  }
  if (!withHosts.some((d) => d.name === requested) && !ctx.backends?.[requested]) {
    const reason = `the ${requested} backend runs VMs on this machine only: host and connect need ${names}`;
    throw new LocalVmError('VALIDATION', `invalid VM spec: ${reason}`, { issues: [{ property: 'host', reason }] });
  }
  return resolveBackend(requested, ctx);
}

/** Every backend that may hold VMs in this context, in registration order. */
export async function availableBackends(ctx: OperationContext): Promise<Backend[]> {
  const names = new Set([...backendDrivers().map((d) => d.name), ...Object.keys(ctx.backends ?? {})]);
  const list: Backend[] = [];
  for (const name of names) {
    if (backendDriver(name) && !backendAvailability(name, ctx).available) continue;
    list.push(await getBackend(name, ctx));
  }
  return list;
}
