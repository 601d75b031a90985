/** `localvm image build|list|pull|rm`: the tiny guest image, downloaded images, the image cache. */
import type { Command as Commander } from 'commander';
import type { DownloadProgress } from '../../images/index.js';
import { formatDownloadProgress, formatImageTable, formatPrune, formatPulled } from '../format.js';
import type { CliSession } from '../shared.js';

/** Redraws one progress line on a terminal (at most 10 times a second); plain start and end lines otherwise. */
function downloadProgress(cli: CliSession, url: string) {
  const tty = cli.isTty();
  const started = performance.now();
  let drawn = 0;
  if (!tty) cli.err(`downloading ${url}...\n`);
  return {
    onProgress(p: DownloadProgress) {
      if (!tty || performance.now() - drawn < 100) return;
      drawn = performance.now();
      cli.err(`\r\x1b[2K↓ ${formatDownloadProgress(p.receivedBytes, p.totalBytes, drawn - started)}`);
    },
    end(message: string) {
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      cli.err(`${tty ? '\r\x1b[2K' : ''}${url}: ${message} (${seconds} s)\n`);
    },
  };
}

export function registerImage(program: Commander, cli: CliSession): void {
  const image = program.command('image').description('guest images');
  image
    .command('build')
    .description('build the embedded tiny image into the cache (a no-op when it is current)')
    .option('--force', 'rebuild even when the cached image is current')
    .action(async (opts: { force?: boolean }, cmd: Commander) => {
      cli.noDryRun(cmd, 'image build');
      const ctx = cli.contextFor(cmd);
      const { buildTinyImage } = await import('../../backends/qemu/image/index.js');
      const tiny = await cli.withProgress(
        'tiny image (built once, then cached by content hash)',
        () => buildTinyImage({ config: ctx.config, runner: ctx.runner, force: opts.force, log: ctx.log }),
        (t) => `tiny-${t.hash.slice(0, 12)}`,
      );
      cli.print(cmd, tiny, `tiny ${tiny.hash.slice(0, 12)} (kernel ${tiny.kernelVersion}) in ${tiny.dir}\n`);
    });
  image
    .command('list')
    .description('images in the cache: tiny builds and downloaded images')
    .action(async (_opts: unknown, cmd: Commander) => {
      const ctx = cli.contextFor(cmd);
      const { listImages } = await import('../../backends/qemu/image/index.js');
      const { listDownloads } = await import('../../images/index.js');
      const images = await listImages(ctx.config);
      const downloads = await listDownloads(ctx.config);
      // One array for --json: tiny builds as before, downloads with name "download".
      const json = [...images, ...downloads.map((d) => ({ name: 'download', ...d }))];
      cli.print(cmd, json, formatImageTable(images, downloads));
    });
  image
    .command('pull')
    .description('download a qcow2/raw image by URL into the cache, verified against its checksum (once)')
    .argument('<url>', 'http:// or https:// URL of the image')
    .option('--checksum <sum>', 'sha256:<hex> or sha512:<hex>, e.g. from the SHA256SUMS beside the image')
    .option('--checksum-url <url>', 'URL of a SHA256SUMS/SHA512SUMS file listing the image')
    .action(async (url: string, opts: { checksum?: string; checksumUrl?: string }, cmd: Commander) => {
      cli.noDryRun(cmd, 'image pull');
      const ctx = cli.contextFor(cmd);
      const { pullImage } = await import('../../images/index.js');
      const progress = downloadProgress(cli, url);
      let pulled;
      try {
        pulled = await pullImage(ctx.config, { url, checksum: opts.checksum, checksumUrl: opts.checksumUrl }, progress);
      } catch (error) {
        progress.end(`failed: ${(error as { code?: string }).code ?? 'error'}`);
        throw error;
      }
      progress.end(pulled.downloaded ? 'downloaded and verified' : 'already cached');
      cli.print(cmd, pulled, formatPulled(pulled));
    });
  image
    .command('rm')
    .description('remove a downloaded image (refused while a VM uses it as its backing file)')
    .argument('<ref>', 'its id (from image list), URL or file name')
    .action(async (ref: string, _opts: unknown, cmd: Commander) => {
      cli.noDryRun(cmd, 'image rm');
      const ctx = cli.contextFor(cmd);
      const { removeDownload } = await import('../../images/index.js');
      const { vmsUsingImage } = await import('../../backends/qemu/image/remote.js');
      const removed = await removeDownload(ctx.config, ref, (path, entry) =>
        vmsUsingImage(ctx.config, ctx.runner, path, entry),
      );
      cli.print(cmd, removed, removed.map((e) => `removed ${e.id} ${e.url} (${e.path})\n`).join(''));
    });
  image
    .command('prune')
    .description('remove old tiny builds, downloaded images and templates nothing in this home uses')
    .option('--dry-run', 'list what would be removed, with sizes, and remove nothing')
    .action(async (opts: { dryRun?: boolean }, cmd: Commander) => {
      const ctx = cli.contextFor(cmd);
      const { pruneImages } = await import('../../operations/prune.js');
      const dryRun = Boolean(opts.dryRun) || Boolean(cli.globals(cmd).dryRun);
      const report = await pruneImages({ dryRun }, ctx);
      cli.print(cmd, report, formatPrune(report));
    });
}
