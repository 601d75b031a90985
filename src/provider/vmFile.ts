/**
 * The I/O half of the `VmFile` resource. A file is written in place when its content
 * changes (same id, same path), and a delete removes only the content this resource wrote:
 * the guest file's sha256 must still be the one recorded.
 */
import { readFile } from 'node:fs/promises';
import { connect } from '../connector.js';
import { LocalVmError, isLocalVmError } from '../errors.js';
import {
  checkVmFile,
  diffVmFile,
  fileUpdateRewrites,
  plain,
  sha256,
  vmFileOf,
  vmInstanceDrift,
  vmInstanceOuts,
  type Props,
  type VmFileInputs,
} from './logic.js';
import {
  bounded,
  failIfNonZero,
  guarded,
  observeVm,
  runInVm,
  toCheckReply,
  toDiffReply,
  warn,
  type CheckReply,
  type CreateReply,
  type Ctx,
  type DiffReply,
  type ReadReply,
  type UpdateReply,
} from './shared.js';

async function fileContent(f: { content?: string | undefined; source?: string | undefined }): Promise<Uint8Array> {
  if (f.content !== undefined) return new TextEncoder().encode(f.content);
  if (f.source === undefined) throw new LocalVmError('VALIDATION', 'a VmFile needs content or source');
  try {
    return await readFile(f.source);
  } catch (error) {
    throw new LocalVmError('NOT_FOUND', `cannot read source file ${f.source}: ${(error as Error).message}`, {
      issues: [{ property: 'source', reason: 'cannot be read' }],
      cause: error,
    });
  }
}

/** The sha256 of the guest file as it is now; undefined when there is no such file. */
async function guestSha256(f: VmFileInputs, ctx: Ctx): Promise<string | undefined> {
  const exists = await runInVm(f.vm, ['test', '-f', f.path], {}, f.timeoutMs, ctx);
  if (exists.exitCode !== 0) return undefined;
  const conn = await connect(f.vm, ctx);
  try {
    return sha256(await bounded(f.timeoutMs, `read of ${f.path} in VM ${f.vm}`, f.vm, ctx, () => conn.getFile(f.path)));
  } catch (error) {
    if (isLocalVmError(error, 'NOT_FOUND')) return undefined;
    throw error;
  }
}

/** Writes the file's bytes with its mode; the outputs record their sha256 and the VM's boot. */
async function writeFileOuts(inputs: Props, f: VmFileInputs, ctx: Ctx): Promise<Props> {
  const bytes = await fileContent(f);
  const conn = await connect(f.vm, ctx);
  await bounded(f.timeoutMs, `write of ${f.path} in VM ${f.vm}`, f.vm, ctx, (signal) =>
    conn.putFile(f.path, bytes, { mode: f.mode, signal }),
  );
  const info = await observeVm(f.vm, ctx, true);
  return plain({ ...inputs, sha256: sha256(bytes), ...(info ? vmInstanceOuts(info) : {}) });
}

export async function vmFileCheck(_olds: Props, news: Props): Promise<CheckReply> {
  return toCheckReply(checkVmFile(news));
}

/**
 * `diff` for VmFile: another vm or path replaces it; content, source (or the source file's
 * bytes) and a VM recreated or restarted since the write (looked up now) write it again in
 * place; mode updates.
 */
export async function vmFileDiff(_id: string, olds: Props, news: Props, ctx?: Ctx): Promise<DiffReply> {
  let sourceHash: string | undefined;
  if (typeof news.source === 'string') {
    // Unreadable now: let the update report it; the diff only needs to see a change.
    sourceHash = await readFile(news.source).then(sha256, () => 'unreadable');
  }
  const drift = typeof news.vm === 'string' ? vmInstanceDrift(olds, await observeVm(news.vm, ctx, true)) : undefined;
  return toDiffReply(diffVmFile(olds, news, sourceHash, drift), ['vm', 'path']);
}

/** `create` for VmFile: writes the bytes with the mode; outputs their sha256. */
export async function vmFileCreate(inputs: Props, ctx?: Ctx): Promise<CreateReply> {
  return guarded(async () => {
    const f = vmFileOf(inputs);
    return { id: `${f.vm}:${f.path}`, outs: await writeFileOuts(inputs, f, ctx) };
  });
}

/**
 * `read` for VmFile (refresh): drops the file (so `up` writes it again) when its VM is gone
 * or is another instance, or when the guest file is missing or holds other bytes than the
 * ones written. A stopped VM cannot be looked into: the file is kept as it is.
 */
export async function vmFileRead(id: string, props: Props, ctx?: Ctx): Promise<ReadReply> {
  return guarded(async () => {
    const f = vmFileOf(props);
    const info = await observeVm(f.vm, ctx);
    const drift = vmInstanceDrift(props, info);
    if (!info || drift === 'gone' || drift === 'recreated') return {};
    if (info.state !== 'running') return { id, props };
    if ((await guestSha256(f, ctx)) !== props.sha256) return {};
    // The bytes survived whatever boot this is: it is the file's boot from now on.
    return { id, props: plain({ ...props, ...vmInstanceOuts(info) }) };
  });
}

/** `update` for VmFile: new bytes (or a VM that lost them) are written again; a mode change alone is a `chmod`. */
export async function vmFileUpdate(_id: string, olds: Props, news: Props, ctx?: Ctx): Promise<UpdateReply> {
  return guarded(async () => {
    const f = vmFileOf(news);
    const source = f.source === undefined ? undefined : await readFile(f.source).then(sha256, () => 'unreadable');
    const drift = vmInstanceDrift(olds, await observeVm(f.vm, ctx));
    const { updates } = diffVmFile(olds, news, source, drift);
    if (fileUpdateRewrites(updates)) return { outs: await writeFileOuts(news, f, ctx) };
    if (olds.mode !== f.mode) {
      const argv = ['chmod', f.mode.toString(8), '--', f.path];
      failIfNonZero(f.vm, argv, await runInVm(f.vm, argv, {}, f.timeoutMs, ctx), false);
    }
    return {
      outs: plain({ ...news, sha256: olds.sha256, vmCreatedAt: olds.vmCreatedAt, vmBootedAt: olds.vmBootedAt }),
    };
  });
}

/**
 * `delete` for VmFile: `rm -f` in the guest, only when the file still holds the bytes this
 * resource wrote (another resource, or someone else, may have written the path since). A VM
 * or a file that is already gone is success.
 */
export async function vmFileDelete(_id: string, props: Props, ctx?: Ctx): Promise<void> {
  return guarded(async () => {
    const f = vmFileOf(props);
    try {
      if (typeof props.sha256 === 'string') {
        const now = await guestSha256(f, ctx);
        if (now === undefined) return;
        if (now !== props.sha256) {
          warn(`left ${f.path} in VM ${f.vm}: it no longer holds the content this VmFile wrote`);
          return;
        }
      }
      const argv = ['rm', '-f', '--', f.path];
      failIfNonZero(f.vm, argv, await runInVm(f.vm, argv, {}, f.timeoutMs, ctx), false);
    } catch (error) {
      if (isLocalVmError(error, 'NOT_FOUND')) return;
      throw error;
    }
  });
}
