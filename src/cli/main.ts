#!/usr/bin/env node
/** The `localvm` executable: hands argv to the program and exits with its code. */
import { runCli } from './program.js';

const code = await runCli(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
process.exitCode = code;
// A leaked socket or timer must not keep a finished command alive; normal exits happen first.
setTimeout(() => process.exit(code), 2_000).unref();
