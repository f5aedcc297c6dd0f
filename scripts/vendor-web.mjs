// Copies the page's third-party files from node_modules into web/vendor/, where nginx serves them
// (natively from the repository, in compose from the ./web mount): no CDN, nothing fetched by the
// browser from elsewhere. Run by `npm run build`; the copies are committed like web/protocol.js,
// and test/unit/web-vendor.test.ts fails when they differ from the pinned package.
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** [from node_modules, to web/vendor] */
export const VENDORED = [
  ['uplot/dist/uPlot.esm.js', 'uPlot.esm.js'],
  // Beside the module, so tsconfig.web.json types the import from it.
  ['uplot/dist/uPlot.d.ts', 'uPlot.esm.d.ts'],
  ['uplot/dist/uPlot.min.css', 'uPlot.min.css'],
];

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  mkdirSync(join(root, 'web', 'vendor'), { recursive: true });
  for (const [from, to] of VENDORED) copyFileSync(join(root, 'node_modules', from), join(root, 'web', 'vendor', to));
}
