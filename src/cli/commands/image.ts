/** `localvm image build|list`: the tiny guest image and the image cache. */
import type { Command as Commander } from 'commander';
import { formatImageTable } from '../format.js';
import type { CliSession } from '../shared.js';

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
    .description('images in the cache')
    .action(async (_opts: unknown, cmd: Commander) => {
      const ctx = cli.contextFor(cmd);
      const { listImages } = await import('../../backends/qemu/image/index.js');
      const images = await listImages(ctx.config);
      cli.print(cmd, images, formatImageTable(images));
    });
}
