/**
 * The main job, end to end on a real VM from the embedded `tiny` image: create, wait
 * until ready, run a command, copy a file in and out, delete. Prints what it does and
 * how long each step took; used by `localvm demo` and the README's first command.
 */
import { createHash, randomBytes } from 'node:crypto';
import { withDefaults, type OperationContext } from './context.js';
import { LocalVmError } from './errors.js';
import { connect } from './connector.js';
import { createVmWithRetry, deleteVm, waitForVmReady } from './operations/vm.js';

export interface DemoStep {
  step: string;
  ms: number;
  detail: string;
}

export interface DemoOptions {
  /** VM name; a unique `localvm-demo-*` name by default. */
  name?: string;
  /** Called with each step as it finishes. */
  onStep?: (step: DemoStep) => void;
  /** Keep the VM instead of deleting it at the end. */
  keep?: boolean;
}

/** Runs the demo. Always deletes the VM it created (unless `keep`), even when a step fails. */
export async function runDemo(options: DemoOptions = {}, ctx?: Partial<OperationContext>): Promise<DemoStep[]> {
  const c = withDefaults(ctx);
  const name = options.name ?? `localvm-demo-${randomBytes(3).toString('hex')}`;
  const steps: DemoStep[] = [];
  const step = async <T>(label: string, fn: () => Promise<T>, describe: (value: T) => string): Promise<T> => {
    const started = performance.now();
    const value = await fn();
    const done = { step: label, ms: Math.round(performance.now() - started), detail: describe(value) };
    steps.push(done);
    options.onStep?.(done);
    return value;
  };

  try {
    await step(
      'create',
      () => createVmWithRetry({ name, image: 'tiny', memory: 256 }, {}, c),
      (r) => `${name} on ${r.info.backend} (accelerator ${r.info.accel ?? '?'}, pid ${r.info.pid ?? '?'})`,
    );
    await step(
      'wait ready',
      () => waitForVmReady(name, {}, c),
      (r) => `guest agent answered after ${r.probes} probe${r.probes === 1 ? '' : 's'}`,
    );
    const vm = await connect(name, c);
    await step(
      'exec',
      () => vm.exec(['uname', '-sr']),
      (r) => `uname -sr → ${r.stdout.trim()} (exit ${r.exitCode})`,
    );
    const payload = randomBytes(64 * 1024);
    const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
    await step(
      'copy in',
      () => vm.putFile('/tmp/demo.bin', payload, { mode: 0o644 }),
      () => `64 KiB → /tmp/demo.bin`,
    );
    const back = await step(
      'copy out',
      () => vm.getFile('/tmp/demo.bin'),
      (b) => `${b.length} bytes back, sha256 ${sha(b) === sha(payload) ? 'matches' : 'DIFFERS'}`,
    );
    if (sha(back) !== sha(payload)) {
      throw new LocalVmError('INTERNAL', 'the file copied out of the VM differs from the one copied in', { vm: name });
    }
  } finally {
    if (!options.keep)
      await step(
        'delete',
        () => deleteVm(name, c),
        () => `${name} deleted`,
      );
  }
  return steps;
}
