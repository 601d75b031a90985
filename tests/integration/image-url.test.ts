/**
 * Images by URL against a real HTTP server on 127.0.0.1 started here (node:http), serving a
 * real qcow2 made with qemu-img: verified downloads into the cache, and what a bad checksum,
 * a broken-off transfer, a 404 and redirects leave behind (nothing usable). One VM is created
 * from a URL image: its overlay's backing file is the cached download and QEMU runs.
 */
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createQemuBackend } from '../../src/backends/qemu/index.js';
import { runCli } from '../../src/cli/program.js';
import { vmsUsingImage } from '../../src/backends/qemu/image/remote.js';
import { loadConfig, type LocalVmConfig } from '../../src/config.js';
import {
  downloadsDir,
  listDownloads,
  pullImage,
  removeDownload,
  type DownloadProgress,
} from '../../src/images/index.js';
import { parseQemuImgInfo } from '../../src/parsers.js';
import { createExecaRunner, runChecked } from '../../src/runner.js';
import { parseVmSpec } from '../../src/schema.js';
import { rejection } from '../fixtures/rejection.js';
import { testTempDir } from '../fixtures/tempDir.js';
import { missingTools } from '../fixtures/tools.js';

const skip = missingTools('qemu-img', 'qemu-io', 'qemu-system-x86_64') !== undefined;
const runner = createExecaRunner();

let server: Server;
let srcDir: string;
let base: string;
let image: Buffer;
let sha256: string;
/** Requests per path, so a test can say the server was not asked again. */
const hits = new Map<string, number>();

async function makeQcow2(dir: string): Promise<Buffer> {
  const path = join(dir, 'src.qcow2');
  await runChecked(runner, { file: 'qemu-img', args: ['create', '-f', 'qcow2', path, '64M'] });
  // Real data in the image (4 MiB of a pattern), so the transfer is more than a header.
  await runChecked(runner, { file: 'qemu-io', args: ['-f', 'qcow2', '-c', 'write -P 0xab 0 4M', path] });
  return readFileSync(path);
}

function serve(body: Buffer): Promise<Server> {
  const s = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    const send = (data: Buffer) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': data.length });
      res.end(data);
    };
    if (path.startsWith('/img/')) return send(body);
    if (path === '/SHA256SUMS') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      return res.end(`${'0'.repeat(64)}  other.qcow2\n${sha256}  debian-12-genericcloud-amd64.qcow2\n`);
    }
    if (path.startsWith('/redirect/')) {
      res.writeHead(302, { location: path.replace('/redirect/', '/img/') });
      return res.end();
    }
    if (path.startsWith('/loop/')) {
      res.writeHead(301, { location: path });
      return res.end();
    }
    if (path.startsWith('/cut/')) {
      // Headers promise the whole file; half of it comes, then the connection dies.
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, body.length >> 1), () => setTimeout(() => res.socket?.destroy(), 50));
      return;
    }
    if (path.startsWith('/stall/')) {
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, 1024));
      return; // and nothing more, until the client gives up
    }
    res.writeHead(404);
    res.end('not found');
  });
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(s)));
}

function freshConfig(): LocalVmConfig {
  const root = testTempDir('lvm-url-');
  return loadConfig(process.env, {
    stateDir: join(root, 'state'),
    cacheDir: join(root, 'cache'),
    runDir: join(root, 'run'),
  });
}

/** What is in the downloads directory apart from the index and its lock: nothing, after a failure. */
function cachedFiles(config: LocalVmConfig): string[] {
  const dir = downloadsDir(config);
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f !== 'index.json' && f !== '.index.lock');
}

describe.skipIf(skip)('images by URL (a real HTTP server on 127.0.0.1)', () => {
  beforeAll(async () => {
    srcDir = mkdtempSync(join(tmpdir(), 'lvm-url-src-'));
    image = await makeQcow2(srcDir);
    sha256 = createHash('sha256').update(image).digest('hex');
    server = await serve(image);
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    if (srcDir) rmSync(srcDir, { recursive: true, force: true });
  });

  const url = (route: string) => `${base}/${route}/debian-12-genericcloud-amd64.qcow2`;

  it('downloads once, verified, with progress; a second pull does not ask the server', async () => {
    const config = freshConfig();
    const progress: DownloadProgress[] = [];
    const pulled = await pullImage(
      config,
      { url: url('img'), checksum: `sha256:${sha256}` },
      { onProgress: (p) => progress.push(p) },
    );
    expect(pulled).toMatchObject({
      downloaded: true,
      format: 'qcow2',
      sizeBytes: image.length,
      id: sha256.slice(0, 12),
    });
    expect(pulled.path).toBe(join(downloadsDir(config), `sha256-${sha256}.qcow2`));
    expect(createHash('sha256').update(readFileSync(pulled.path)).digest('hex')).toBe(sha256);
    // Read-only: nothing writes into a backing file by accident.
    expect(statSync(pulled.path).mode & 0o777).toBe(0o400);
    expect(cachedFiles(config)).toEqual([`sha256-${sha256}.qcow2`]);

    expect(progress.length).toBeGreaterThan(1);
    const bytes = progress.map((p) => p.receivedBytes);
    expect(bytes).toEqual([...bytes].sort((a, b) => a - b));
    expect(new Set(bytes).size).toBe(bytes.length);
    expect(progress.at(-1)).toMatchObject({ receivedBytes: image.length, totalBytes: image.length });

    const before = hits.get('/img/debian-12-genericcloud-amd64.qcow2');
    const again = await pullImage(config, { url: url('img'), checksum: `sha256:${sha256}` });
    expect(again).toMatchObject({ downloaded: false, path: pulled.path });
    expect(hits.get('/img/debian-12-genericcloud-amd64.qcow2')).toBe(before);

    const listed = await listDownloads(config);
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ url: url('img'), checksum: `sha256:${sha256}`, sizeBytes: image.length });
    expect(Date.parse(listed[0]?.fetchedAt ?? '')).toBeGreaterThan(0);
  });

  it('refuses a checksum mismatch and caches nothing', async () => {
    const config = freshConfig();
    const wrong = `sha256:${'0'.repeat(64)}`;
    const error = await rejection(pullImage(config, { url: url('img'), checksum: wrong }));
    expect(error.code).toBe('VALIDATION');
    expect(error.details).toMatchObject({ expected: wrong, actual: `sha256:${sha256}` });
    expect(cachedFiles(config)).toEqual([]);
    expect(await listDownloads(config)).toEqual([]);
  });

  it('verifies sha512 too', async () => {
    const config = freshConfig();
    const sha512 = createHash('sha512').update(image).digest('hex');
    const pulled = await pullImage(config, { url: url('img'), checksum: `sha512:${sha512}` });
    expect(pulled.path.endsWith(`sha512-${sha512}.qcow2`)).toBe(true);
  });

  it('a transfer that breaks off is a clear error and leaves no partial file; the next pull starts over', async () => {
    const config = freshConfig();
    const error = await rejection(pullImage(config, { url: url('cut'), checksum: `sha256:${sha256}` }));
    expect(error.code).toBe('TRANSIENT');
    expect(error.message).toMatch(/broke off|ended after/);
    expect(cachedFiles(config)).toEqual([]);
    const pulled = await pullImage(config, { url: url('img'), checksum: `sha256:${sha256}` });
    expect(pulled.downloaded).toBe(true);
    expect(cachedFiles(config)).toEqual([`sha256-${sha256}.qcow2`]);
  });

  it('a server that stops sending is a TIMEOUT, and the temp file is removed', async () => {
    const config = freshConfig();
    const error = await rejection(
      pullImage(config, { url: url('stall'), checksum: `sha256:${sha256}` }, { stallMs: 300 }),
    );
    expect(error.code).toBe('TIMEOUT');
    expect(cachedFiles(config)).toEqual([]);
  });

  it('a 404 is NOT_FOUND naming the URL', async () => {
    const config = freshConfig();
    const error = await rejection(pullImage(config, { url: url('nothing'), checksum: `sha256:${sha256}` }));
    expect(error.code).toBe('NOT_FOUND');
    expect(error.message).toContain(url('nothing'));
    expect(cachedFiles(config)).toEqual([]);
  });

  it('an unreachable server is a clear error', async () => {
    const config = freshConfig();
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', () => resolve()));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const error = await rejection(
      pullImage(config, { url: `http://127.0.0.1:${port}/a.qcow2`, checksum: `sha256:${sha256}` }),
    );
    expect(error.code).toBe('TRANSIENT');
    expect(error.message).toMatch(/ECONNREFUSED/);
  });

  it('follows redirects, up to a limit', async () => {
    const config = freshConfig();
    const pulled = await pullImage(config, { url: url('redirect'), checksum: `sha256:${sha256}` });
    expect(pulled).toMatchObject({ downloaded: true, url: url('redirect') });
    const error = await rejection(pullImage(freshConfig(), { url: url('loop'), checksum: `sha256:${sha256}` }));
    expect(error.code).toBe('PROTOCOL');
    expect(hits.get('/loop/debian-12-genericcloud-amd64.qcow2')).toBe(6);
  });

  it('takes the checksum from a SHA256SUMS file, and pins it: a second pull asks nobody', async () => {
    const config = freshConfig();
    const req = { url: url('img'), checksumUrl: `${base}/SHA256SUMS` };
    const pulled = await pullImage(config, req);
    expect(pulled).toMatchObject({ checksum: `sha256:${sha256}`, checksumUrl: `${base}/SHA256SUMS` });
    const sums = hits.get('/SHA256SUMS');
    const img = hits.get('/img/debian-12-genericcloud-amd64.qcow2');
    expect((await pullImage(config, req)).downloaded).toBe(false);
    expect(hits.get('/SHA256SUMS')).toBe(sums);
    expect(hits.get('/img/debian-12-genericcloud-amd64.qcow2')).toBe(img);
    const missing = await rejection(
      pullImage(freshConfig(), { url: `${base}/img/unlisted.qcow2`, checksumUrl: `${base}/SHA256SUMS` }),
    );
    expect(missing.code).toBe('NOT_FOUND');
  });

  it('creates a VM from a URL image: the dry-run plan downloads nothing, the overlay is backed by the cached file', async () => {
    const config = freshConfig();
    const backend = createQemuBackend({ config, runner });
    const name = `${config.testPrefix}url-vm`;
    const spec = parseVmSpec({ name, memory: 128, image: url('img'), imageChecksum: `sha256:${sha256}` });
    const before = hits.get('/img/debian-12-genericcloud-amd64.qcow2') ?? 0;
    const plan = await backend.plan({ operation: 'create', spec });
    expect(plan.steps[0]?.summary).toMatch(
      /^download http:\/\/127\.0\.0\.1:\d+\/img\/.* → .*sha256-[0-9a-f]{64}\.qcow2/,
    );
    expect(hits.get('/img/debian-12-genericcloud-amd64.qcow2') ?? 0).toBe(before);
    expect(cachedFiles(config)).toEqual([]);
    try {
      const info = await backend.create(spec);
      expect(info.state).toBe('running');
      const cached = join(downloadsDir(config), `sha256-${sha256}.qcow2`);
      const overlay = join(config.stateDir, 'vms', name, 'overlay.qcow2');
      const overlayInfo = parseQemuImgInfo(
        (await runChecked(runner, { file: 'qemu-img', args: ['info', '--output=json', '-U', overlay] })).stdout,
      );
      expect(overlayInfo.backingFile).toBe(cached);
      expect(overlayInfo.backingFormat).toBe('qcow2');
      // Cached now: planning again has no download step.
      const replanned = await backend.plan({ operation: 'create', spec: { ...spec, name: `${name}-2` } });
      expect(replanned.steps.some((s) => s.summary.startsWith('download'))).toBe(false);
      // In use as a backing file: image rm is refused and removes nothing.
      expect(await vmsUsingImage(config, runner, cached, { url: url('img'), checksum: `sha256:${sha256}` })).toEqual([
        name,
      ]);
      const refused = await rejection(
        removeDownload(config, sha256.slice(0, 12), (p, e) => vmsUsingImage(config, runner, p, e)),
      );
      expect(refused.code).toBe('CONFLICT');
      expect(existsSync(cached)).toBe(true);
      await backend.delete(name);
      const removed = await removeDownload(config, url('img'), (p, e) => vmsUsingImage(config, runner, p, e));
      expect(removed.map((e) => e.path)).toEqual([cached]);
      expect(cachedFiles(config)).toEqual([]);
      expect(await listDownloads(config)).toEqual([]);
    } finally {
      await backend.delete(name).catch(() => undefined);
    }
  });

  it('trusts a cached file only for its own checksum and size', async () => {
    const config = freshConfig();
    const good = await pullImage(config, { url: url('img'), checksum: `sha256:${sha256}` });
    // Another checksum for the same URL is not answered from the cache: the server is asked, and the mismatch refused.
    const before = hits.get('/img/debian-12-genericcloud-amd64.qcow2') ?? 0;
    const other = await rejection(pullImage(config, { url: url('img'), checksum: `sha256:${'1'.repeat(64)}` }));
    expect(other.code).toBe('VALIDATION');
    expect(hits.get('/img/debian-12-genericcloud-amd64.qcow2')).toBe(before + 1);
    // A cached file that is not the size that was verified is downloaded again.
    chmodSync(good.path, 0o600);
    truncateSync(good.path, 1000);
    const again = await pullImage(config, { url: url('img'), checksum: `sha256:${sha256}` });
    expect(again.downloaded).toBe(true);
    expect(statSync(again.path).size).toBe(image.length);
  });

  it('a create whose download fails leaves no VM directory and nothing in the cache', async () => {
    const config = freshConfig();
    const backend = createQemuBackend({ config, runner });
    const name = `${config.testPrefix}url-bad`;
    const wrong = parseVmSpec({ name, image: url('img'), imageChecksum: `sha256:${'2'.repeat(64)}` });
    expect((await rejection(backend.create(wrong))).code).toBe('VALIDATION');
    expect(existsSync(join(config.stateDir, 'vms', name))).toBe(false);
    expect(cachedFiles(config)).toEqual([]);
    const gone = parseVmSpec({ name, image: url('nothing'), imageChecksum: `sha256:${sha256}` });
    expect((await rejection(backend.create(gone))).code).toBe('NOT_FOUND');
    expect(existsSync(join(config.stateDir, 'vms', name))).toBe(false);
  });

  it('localvm image pull / list / rm', async () => {
    const config = freshConfig();
    let stdout = '';
    let stderr = '';
    const run = async (...argv: string[]) => {
      stdout = '';
      stderr = '';
      const code = await runCli(argv, {
        // A terminal: the progress line is redrawn in place.
        stdout: { write: (c) => (stdout += String(c)), isTTY: true },
        stderr: { write: (c) => (stderr += String(c)) },
        env: {},
        context: { config, runner },
      });
      return { code, stdout, stderr };
    };
    const noSum = await run('image', 'pull', url('img'));
    expect(noSum.code).toBe(2);
    expect(noSum.stderr).toMatch(/--checksum sha256:<hex> or --checksum-url/);

    const pulled = await run('image', 'pull', url('img'), '--checksum', `sha256:${sha256}`);
    expect(pulled.code).toBe(0);
    const cached = join(downloadsDir(config), `sha256-${sha256}.qcow2`);
    expect(pulled.stdout).toMatch(new RegExp(`^${cached} \\(.*qcow2, downloaded, sha256:${sha256.slice(0, 12)}`));
    expect(pulled.stderr).toContain('downloaded and verified');
    expect(pulled.stderr).toContain('\r\x1b[2K↓ ');
    expect(pulled.stderr).toMatch(/↓ [\d.]+ (B|KiB|MiB) of [\d.]+ MiB \(\d+%\)/);
    expect((await run('image', 'pull', url('img'), '--checksum', `sha256:${sha256}`)).stdout).toContain(
      'already cached',
    );

    const listed = await run('image', 'list');
    expect(listed.stdout).toMatch(/DOWNLOADED\s+SIZE\s+FORMAT\s+CHECKSUM\s+FETCHED\s+URL/);
    expect(listed.stdout).toContain(url('img'));
    const json = JSON.parse((await run('image', 'list', '--json')).stdout) as { name: string; path?: string }[];
    expect(json.filter((i) => i.name === 'download').map((i) => i.path)).toEqual([cached]);

    expect((await run('image', 'rm', 'ffffffffffff')).code).toBe(3);
    const removed = await run('image', 'rm', sha256.slice(0, 12));
    expect(removed.code).toBe(0);
    expect(removed.stdout).toContain(`removed ${sha256.slice(0, 12)}`);
    expect(existsSync(cached)).toBe(false);
  });
});
