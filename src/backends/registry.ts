/**
 * The backend registry. Each backend registers itself (its `register.ts`): its name, how to
 * construct it, whether it can run on this host, how eager `auto` is to pick it, and what it
 * can do. Everything else — the schema's backend names, the CLI's `--backend` choices, `auto`
 * selection, listing VMs across backends — asks here, so a new backend touches one folder.
 */
import type { Backend, Capability } from '../backend.js';
import type { LocalVmConfig } from '../config.js';
import type { Clock } from '../time/clock.js';
import type { CommandRunner } from '../runner.js';

/** What a backend is constructed from. */
export interface BackendHost {
  config: LocalVmConfig;
  runner: CommandRunner;
  log?: ((msg: string) => void) | undefined;
  /** For the backend's own waits (tests inject a fake); the real clock when absent. */
  clock?: Clock | undefined;
}

/** Whether a backend can run here, and why (shown by `auto`, errors and `--help`). */
export interface Availability {
  available: boolean;
  reason: string;
  /** What to do when it is not available. */
  hint?: string | undefined;
}

export interface BackendDriver {
  readonly name: string;
  /** One line for `--help`. */
  readonly summary: string;
  readonly capabilities: readonly Capability[];
  /** Built-in images this backend provides (`tiny`); `auto` sends specs naming them here. */
  readonly embeddedImages?: readonly string[];
  /** Cheap and pure apart from looking up tools: no process is started. */
  availability(config: LocalVmConfig): Availability;
  /**
   * How much `auto` wants this backend on this host (higher wins), or undefined when `auto`
   * should never pick it here. Only consulted for available backends.
   */
  autoRank(config: LocalVmConfig): number | undefined;
  /** Whether this backend can run a spec naming `image` (auto skips those it cannot). */
  acceptsImage?(image: string): boolean;
  /** Places VMs on hosts (a spec's `host`/`connect`): `auto` sends such specs here, others refuse them. */
  readonly hosts?: boolean;
  create(host: BackendHost): Promise<Backend>;
}

const drivers = new Map<string, BackendDriver>();

/** Registers a backend. A second registration of the same name replaces the first (tests). */
export function registerBackend(driver: BackendDriver): void {
  drivers.set(driver.name, driver);
}

/** The registered backends, in registration order. */
export function backendDrivers(): BackendDriver[] {
  return [...drivers.values()];
}

export function backendDriver(name: string): BackendDriver | undefined {
  return drivers.get(name);
}

/** The names a spec or `--backend` may give: every registered backend, and `auto`. */
export function backendChoices(): string[] {
  return [...drivers.keys(), 'auto'];
}
