import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// Section 7 of the design: sse/ is the fan-out engine and commands/ the command flow; neither knows
// about HTTP. Read from the sources (type-only imports included: they vanish from dist/).
const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

/** Every module specifier a TypeScript source names: static imports/exports (type-only too) and dynamic import(). */
function specifiers(source: string): string[] {
  const found: string[] = [];
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  for (const m of code.matchAll(/\b(?:import|export)\b[^'";]*?\bfrom\s*['"]([^'"]+)['"]/g)) found.push(m[1]!);
  for (const m of code.matchAll(/\bimport\s*['"]([^'"]+)['"]/g)) found.push(m[1]!);
  for (const m of code.matchAll(/\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g)) found.push(m[1]!);
  for (const m of code.matchAll(/\brequire\s*\(\s*['"]([^'"]+)['"]\s*\)/g)) found.push(m[1]!);
  return found;
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

const HTTP_MODULE = /^(?:node:)?(?:http|https|http2)$/;
const KOA = /^(?:koa|koa-.*|@koa\/.*)$/;

/** Imports of `file` (text `source`) that break the rule: a module matching `bare`, or a relative import resolving into one of src/`dirs`. */
function offending(file: string, source: string, bare: RegExp, dirs: readonly string[]): string[] {
  return specifiers(source).filter((spec) => {
    if (bare.test(spec)) return true;
    if (!spec.startsWith('.')) return false;
    const target = relative(SRC, resolve(dirname(file), spec));
    return dirs.some((d) => target === d || target.startsWith(`${d}/`));
  });
}

function violations(dir: string, bare: RegExp, dirs: readonly string[]): string[] {
  const files = sources(join(SRC, dir));
  expect(files.length).toBeGreaterThan(0);
  return files.flatMap((f) => offending(f, readFileSync(f, 'utf8'), bare, dirs).map((spec) => `${relative(SRC, f)} imports ${spec}`));
}

describe('layering of src/', () => {
  it('finds every kind of import the rule is about (so the checks below can fail)', () => {
    const sample = [
      "import type { ServerResponse } from 'node:http';",
      "import Koa from 'koa';",
      "import {\n  a,\n  type B,\n} from '../http/events.js';",
      "export { x } from 'http';",
      "const m = await import('@koa/router');",
      "import 'koa-compose';",
      '// import { no } from "node:http";',
    ].join('\n');
    expect(specifiers(sample)).toEqual(['node:http', 'koa', '../http/events.js', 'http', 'koa-compose', '@koa/router']);
    const file = join(SRC, 'sse', 'x.ts');
    expect(offending(file, sample, HTTP_MODULE, ['http'])).toEqual(['node:http', '../http/events.js', 'http']);
    expect(offending(file, "import { a } from './http-ish.js';\nimport { b } from '../commands/x.js';", KOA, ['http'])).toEqual([]);
  });

  it('src/sse/ imports neither node:http (nor https/http2) nor koa nor src/http/', () => {
    expect(violations('sse', new RegExp(`${HTTP_MODULE.source}|${KOA.source}`), ['http'])).toEqual([]);
  });

  it('src/commands/ imports neither koa nor src/http/', () => {
    expect(violations('commands', KOA, ['http'])).toEqual([]);
  });
});
