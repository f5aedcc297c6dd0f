import { access } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The compiled entry point; `npm test` builds first, a bare `vitest` run needs `npm run build`. */
export async function builtEntry(relative: string): Promise<string> {
  const path = `${ROOT}dist/${relative}`;
  try {
    await access(path);
  } catch {
    throw new Error(`${path} is missing: run \`npm run build\` first (npm test does it for you)`);
  }
  return path;
}
