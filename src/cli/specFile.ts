/**
 * Files behind `create -f spec.yaml|json` and `--user-data FILE`. YAML through the `yaml`
 * package (JSON is YAML too), never a hand parser; user-data is checked the way cloud-init
 * reads it, so a file it would ignore is refused or warned about before a VM boots.
 */
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { LocalVmError } from '../errors.js';

/** The spec object in a YAML or JSON file's text. VALIDATION when it is not one. */
export function parseSpecFile(text: string, path: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (error) {
    const where = error instanceof YAMLParseError ? ` (line ${error.linePos?.[0]?.line ?? '?'})` : '';
    throw new LocalVmError(
      'VALIDATION',
      `${path} is not valid YAML or JSON${where}: ${(error as Error).message.split('\n')[0]}`,
      {
        issues: [{ property: 'file', reason: 'must be a YAML or JSON VM spec' }],
      },
    );
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new LocalVmError(
      'VALIDATION',
      `${path} must hold one VM spec (a mapping such as "name: web"), not ${Array.isArray(value) ? 'a list' : typeof value}`,
      {
        issues: [{ property: 'file', reason: 'must be a mapping' }],
      },
    );
  }
  return value as Record<string, unknown>;
}

/**
 * Checks cloud-init user-data the way cloud-init reads it: `#cloud-config` must be YAML (a
 * mapping); scripts (`#!`), `#include`, `#cloud-boothook`, MIME multipart and gzip are
 * passed as they are. Anything else cloud-init would ignore: refused when it is not YAML at
 * all, otherwise returned with a warning. Returns the warning, if any.
 */
export function checkUserData(text: string, path: string): string | undefined {
  const first = text.split('\n', 1)[0]?.trim() ?? '';
  const passThrough = ['#!', '#include', '#cloud-boothook', '#part-handler', '#upstart-job', 'Content-Type:'];
  if (passThrough.some((p) => first.startsWith(p))) return undefined;
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (error) {
    throw new LocalVmError(
      'VALIDATION',
      `${path} is not cloud-init user-data: it is not YAML (${(error as Error).message.split('\n')[0]})`,
      {
        issues: [{ property: 'userData', reason: 'must be #cloud-config YAML, a script (#!) or MIME multipart' }],
        hint: 'start a cloud-config file with the line #cloud-config',
      },
    );
  }
  if (first.startsWith('#cloud-config')) {
    if (value !== null && (typeof value !== 'object' || Array.isArray(value))) {
      throw new LocalVmError(
        'VALIDATION',
        `${path}: #cloud-config must be a YAML mapping (keys such as users:, write_files:)`,
        {
          issues: [{ property: 'userData', reason: 'must be a YAML mapping' }],
        },
      );
    }
    return undefined;
  }
  return `${path} does not start with #cloud-config (or #! for a script): cloud-init will ignore it`;
}
