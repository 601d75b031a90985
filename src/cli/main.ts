#!/usr/bin/env node
/** The `localvm` executable: hands argv to the program and exits with its code. */
import { runCli } from './program.js';

/** All of stdin, for `exec -i` / `shell -i`. */
async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const code = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  stdin: readStdin,
});
process.exitCode = code;
// A leaked socket or timer must not keep a finished command alive; normal exits happen first.
setTimeout(() => process.exit(code), 2_000).unref();
