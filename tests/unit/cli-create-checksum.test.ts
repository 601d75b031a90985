/**
 * `create --image URL --image-checksum sha256:… | --image-checksum-url URL` reach the spec's
 * imageChecksum / imageChecksumUrl (and so the download's verification), over a -f file's
 * values; a bad or misplaced checksum is a usage error (exit 2) naming the spec field.
 */
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

import { FakeBackend } from '../fixtures/fakeBackend.js';
import { cliHarness } from '../fixtures/cli.js';

const URL = 'https://images.example/debian-12-genericcloud-amd64.qcow2';
const SHA = `sha256:${'ab'.repeat(32)}`;
const SUMS = 'https://images.example/SHA256SUMS';

const cli = () => cliHarness('localvm-cli-checksum-', new FakeBackend());

describe('create: image checksum flags', () => {
  it('--image-checksum and --image-checksum-url reach the spec fields', async () => {
    const { backend, run } = cli();
    const a = await run('create', 'sum-a', '--image', URL, '--image-checksum', SHA, '--no-wait');
    expect(a.code, a.stderr).toBe(0);
    expect(backend.vms.get('sum-a')?.info.spec).toMatchObject({ image: URL, imageChecksum: SHA });
    const b = await run('create', 'sum-b', '--image', URL, '--image-checksum-url', SUMS, '--no-wait');
    expect(b.code, b.stderr).toBe(0);
    expect(backend.vms.get('sum-b')?.info.spec).toMatchObject({ image: URL, imageChecksumUrl: SUMS });
  });

  it('a flag overrides the -f file, and the file alone is enough', async () => {
    const { home, backend, run } = cli();
    const file = join(home, 'vm.yaml');
    writeFileSync(file, `name: sum-f\nimage: ${URL}\nimageChecksum: sha256:${'00'.repeat(32)}\n`);
    expect((await run('create', '-f', file, '--image-checksum', SHA, '--no-wait')).code).toBe(0);
    expect(backend.vms.get('sum-f')?.info.spec?.imageChecksum).toBe(SHA);
  });

  it('refuses a malformed checksum, both flags, or a checksum without an image URL (exit 2, nothing created)', async () => {
    const { backend, run } = cli();
    for (const [argv, property] of [
      [['--image', URL, '--image-checksum', 'md5:abc'], 'imageChecksum'],
      [['--image', URL, '--image-checksum', SHA, '--image-checksum-url', SUMS], 'imageChecksumUrl'],
      [['--image-checksum', SHA], 'imageChecksum'],
      [['--image', URL, '--image-checksum-url', 'file:///etc/SHA256SUMS'], 'imageChecksumUrl'],
    ] as const) {
      const r = await run('create', 'sum-bad', ...argv, '--json');
      expect(r.code, r.stderr).toBe(2);
      expect(JSON.parse(r.stderr).error.issues.map((i: { property: string }) => i.property)).toContain(property);
    }
    expect(backend.vms.has('sum-bad')).toBe(false);
  });

  it('--help documents both flags', async () => {
    const { run } = cli();
    const help = (await run('create', '--help')).stdout;
    expect(help).toContain('--image-checksum <algo:hex>');
    expect(help).toContain('--image-checksum-url <url>');
  });
});
