/**
 * Finding host tools on the configured PATH. The edge between the configuration and the
 * backends: backends ask here, so nothing needs the operation context to find a binary.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { LocalVmConfig } from '../config.js';

/** `tool`'s absolute path on the configured PATH, or undefined. */
export function findTool(config: Pick<LocalVmConfig, 'searchPath'>, tool: string): string | undefined {
  for (const dir of config.searchPath.split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, tool), constants.X_OK);
      return join(dir, tool);
    } catch {
      // not here
    }
  }
  return undefined;
}
