/**
 * Feedback during long waits. On a terminal a spinner with the elapsed time redraws one
 * line on stderr; otherwise (CI logs, pipes) one plain line when the wait starts and one
 * when it ends, so logs stay readable and stdout stays clean for `--json`.
 */

export interface ProgressSink {
  write(text: string): void;
}

export interface Progress {
  /** Ends the wait with a final line (`ok` or a failure note). */
  done(message: string): void;
  fail(message: string): void;
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/** Starts a progress indicator for `label`; `tty` picks the spinner, else plain lines. */
export function startProgress(
  label: string,
  sink: ProgressSink,
  tty: boolean,
  now: () => number = () => performance.now(),
): Progress {
  const started = now();
  const seconds = () => ((now() - started) / 1000).toFixed(1);
  if (!tty) {
    sink.write(`${label}...\n`);
    return {
      done: (message) => sink.write(`${label}: ${message} (${seconds()} s)\n`),
      fail: (message) => sink.write(`${label}: failed: ${message} (${seconds()} s)\n`),
    };
  }
  let frame = 0;
  const draw = () => sink.write(`\r\x1b[2K${FRAMES[frame++ % FRAMES.length]} ${label} ${seconds()} s`);
  draw();
  const timer = setInterval(draw, 100);
  timer.unref();
  const finish = (mark: string, message: string) => {
    clearInterval(timer);
    sink.write(`\r\x1b[2K${mark} ${label}: ${message} (${seconds()} s)\n`);
  };
  return { done: (m) => finish('✓', m), fail: (m) => finish('✗', m) };
}
