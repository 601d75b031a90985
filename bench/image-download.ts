/**
 * Download throughput of `pullImage` (fetch, hashed while streaming, fsynced, renamed) from a
 * local HTTP server, against `curl -o /dev/null` of the same URL, a plain node:http stream
 * to /dev/null and the sha256 of the same bytes in memory, in the same run. The server runs in its own process, so neither
 * client shares an event loop with it.
 *
 * Prints medians and writes bench/results/image-download.json.
 * Run: npx tsx bench/image-download.ts [MiB=100] [runs=3]
 */
import { spawn } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { get } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { loadConfig } from '../src/config.js';
import { pullImage } from '../src/images/index.js';
import { createExecaRunner, runChecked } from '../src/runner.js';

const [mib = 100, runs = 3] = process.argv.slice(2).map(Number);
const root = await mkdtemp(join(tmpdir(), 'lvm-dl-bench-'));
const file = join(root, 'image.raw');
const data = randomBytes(mib * 1024 * 1024);
await writeFile(file, data);
const sha256 = createHash('sha256').update(data).digest('hex');

const serverCode = `
const http = require('node:http'), fs = require('node:fs');
const size = fs.statSync(process.argv[1]).size;
http.createServer((req, res) => {
  res.writeHead(200, { 'content-length': size });
  fs.createReadStream(process.argv[1], { highWaterMark: 1 << 20 }).pipe(res);
}).listen(0, '127.0.0.1', function () { console.log(this.address().port); });`;
const server = spawn(process.execPath, ['-e', serverCode, file], { stdio: ['ignore', 'pipe', 'inherit'] });
const port = await new Promise<number>((resolve) =>
  server.stdout.once('data', (d: Buffer) => resolve(Number(String(d)))),
);
const url = `http://127.0.0.1:${port}/image.raw`;
const runner = createExecaRunner();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
async function time(fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}
const mibps = (ms: number) => Math.round((mib * 1000) / ms);

const results: Record<string, number[]> = { localvm: [], curl: [], nodeHttpStream: [], sha256InMemory: [] };
try {
  for (let i = 0; i < runs; i++) {
    results.curl?.push(await time(() => runChecked(runner, { file: 'curl', args: ['-sS', '-o', '/dev/null', url] })));
    results.nodeHttpStream?.push(
      await time(
        () =>
          new Promise<void>((resolve, reject) =>
            get(url, (res) => pipeline(res, createWriteStream('/dev/null')).then(resolve, reject)).on('error', reject),
          ),
      ),
    );
    results.sha256InMemory?.push(await time(async () => createHash('sha256').update(data).digest('hex')));
    const cacheDir = join(root, `cache-${i}`);
    results.localvm?.push(
      await time(() => pullImage(loadConfig(process.env, { cacheDir }), { url, checksum: `sha256:${sha256}` })),
    );
    await rm(cacheDir, { recursive: true, force: true });
  }
} finally {
  server.kill();
  await rm(root, { recursive: true, force: true });
}

const summary = Object.fromEntries(
  Object.entries(results).map(([k, v]) => [
    k,
    { medianMs: Math.round(median(v)), MiBps: mibps(median(v)), runsMs: v.map(Math.round) },
  ]),
);
const out = {
  when: new Date().toISOString(),
  sizeMiB: mib,
  runs,
  ...summary,
  localvmVsCurl: Number((median(results.localvm ?? []) / median(results.curl ?? [])).toFixed(2)),
};
console.log(JSON.stringify(out, null, 2));
await writeFile(new URL('./results/image-download.json', import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
