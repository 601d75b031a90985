/**
 * The VM's SSH key joins the user's own cloud-init user-data as one more part of a MIME
 * multipart message, merged by cloud-init itself: the user's part comes first, untouched,
 * and ours is a cloud-config whose merge rules append to `users` (and never replace a key
 * the user set), so the user's users, keys and everything else stay as they wrote them. Pure.
 */
import { createHash } from 'node:crypto';

/** The login user localvm adds for its own SSH access. */
export const SSH_USER = 'localvm';

/**
 * How cloud-init merges our part into what came before it: lists are appended to
 * (`users` gains our user), dicts keep the values they have (`no_replace`), so nothing of
 * the user's is overwritten. Sent as the part's Merge-Type header and in the document, as
 * cloud-init reads either.
 */
export const MERGE_HOW = 'list(append)+dict(no_replace,recurse_list)+str()';

/**
 * Whether the user's user-data has a `users` list of its own (a top-level key, in a
 * cloud-config or in a cloud-config part of a MIME message): then it decides about
 * cloud-init's default user, and ours is only appended to it.
 */
export function definesUsers(userData: string | undefined): boolean {
  return userData !== undefined && /^users\s*:/m.test(userData);
}

/** The content type cloud-init gives a part by its first line (its own starts-with rules). */
export function userDataContentType(userData: string): string {
  const first = userData.trimStart().split('\n', 1)[0]?.trim() ?? '';
  if (/^(content-type|mime-version):/i.test(first)) return 'message/rfc822';
  if (first.startsWith('#cloud-config-archive')) return 'text/cloud-config-archive';
  if (first.startsWith('#cloud-config')) return 'text/cloud-config';
  if (first.startsWith('#cloud-boothook')) return 'text/cloud-boothook';
  if (first.startsWith('#include')) return 'text/x-include-url';
  if (first.startsWith('#upstart-job')) return 'text/upstart-job';
  if (first.startsWith('## template: jinja')) return 'text/jinja2';
  if (first.startsWith('#part-handler')) return 'text/part-handler';
  if (first.startsWith('#!')) return 'text/x-shellscript';
  return 'text/plain';
}

/**
 * Our cloud-config: the `localvm` user with the VM's public key, passwordless sudo, no
 * password; and the hostname in /etc/hosts (`manage_etc_hosts: localhost`), for sudo.
 * `keepDefaultUser`: a `users` list replaces cloud-init's `[default]`, so without a list of
 * the user's own ours starts with `default` and the image's usual login user still appears.
 */
export function sshCloudConfig(publicKey: string, user = SSH_USER, keepDefaultUser = false): string {
  const key = publicKey.trim();
  if (/[\n"\\]/.test(key)) throw new Error('public key must be one line without quotes');
  return [
    '#cloud-config',
    'merge_how:',
    '  - name: list',
    '    settings: [append]',
    '  - name: dict',
    '    settings: [no_replace, recurse_list]',
    // sudo looks the hostname up: unresolvable, it warns on every command's stderr and waits
    // for DNS (1.6 s a call on the Debian guest). Just the 127.0.1.1 line; a user's setting wins.
    'manage_etc_hosts: localhost',
    'users:',
    ...(keepDefaultUser ? ['  - default'] : []),
    `  - name: ${user}`,
    '    gecos: localvm SSH access',
    '    shell: /bin/sh',
    "    sudo: 'ALL=(ALL) NOPASSWD:ALL'",
    '    lock_passwd: true',
    '    ssh_authorized_keys:',
    `      - "${key}"`,
    '',
  ].join('\n');
}

/**
 * The user-data the guest gets: the user's (if any) and ours as a multipart/mixed message.
 * The boundary is derived from the content, so the same inputs give the same bytes (and
 * the boundary never occurs in a part). A user's own MIME message stays one nested part.
 */
export function mergeUserData(userData: string | undefined, publicKey: string, user = SSH_USER): string {
  const ours = sshCloudConfig(publicKey, user, !definesUsers(userData));
  const parts: { type: string; body: string; mergeType?: string }[] = [];
  if (userData !== undefined && userData.trim() !== '') {
    parts.push({ type: userDataContentType(userData), body: userData });
  }
  parts.push({ type: 'text/cloud-config', body: ours, mergeType: MERGE_HOW });
  let boundary = `localvm-${createHash('sha256')
    .update(`${userData ?? ''}\0${ours}`)
    .digest('hex')
    .slice(0, 24)}`;
  while (parts.some((p) => p.body.includes(boundary))) boundary += 'x';
  const out: string[] = [
    'Content-Type: multipart/mixed; boundary="' + boundary + '"',
    'MIME-Version: 1.0',
    '',
    'This is a multi-part message in MIME format (cloud-init user-data).',
  ];
  for (const p of parts) {
    out.push(`--${boundary}`);
    if (p.type === 'message/rfc822') {
      // A user's own MIME message: its headers are the part's headers.
      out.push(p.body.trimStart().replace(/\n+$/, ''));
      continue;
    }
    out.push(`Content-Type: ${p.type}; charset="utf-8"`, 'MIME-Version: 1.0', 'Content-Transfer-Encoding: 8bit');
    if (p.mergeType) out.push(`Merge-Type: ${p.mergeType}`);
    out.push('', p.body.replace(/\n+$/, ''));
  }
  out.push(`--${boundary}--`, '');
  return out.join('\n');
}
