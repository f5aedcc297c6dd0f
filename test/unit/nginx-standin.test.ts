import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../src/native/project.js';

// The nginx stand-in's template hook (scripts/standins/nginx/), run on this machine with its
// directories pointed at a temporary folder: it must do what the official image documents, since
// the compose tests trust it to render nginx/templates exactly as the real image would.

const run = promisify(execFile);
const HOOK = join(PROJECT_ROOT, 'scripts', 'standins', 'nginx', '20-envsubst-on-templates.sh');
const ENTRYPOINT = join(PROJECT_ROOT, 'scripts', 'standins', 'nginx', 'docker-entrypoint.sh');
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nginx-standin-'));
  await mkdir(join(dir, 'templates', 'sub'), { recursive: true });
  await mkdir(join(dir, 'out'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function hook(env: Record<string, string>) {
  return run('sh', [HOOK], {
    env: {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      NGINX_ENVSUBST_TEMPLATE_DIR: join(dir, 'templates'),
      NGINX_ENVSUBST_OUTPUT_DIR: join(dir, 'out'),
      NGINX_ENTRYPOINT_QUIET_LOGS: '1',
      ...env,
    },
  });
}

describe('nginx stand-in: templates', () => {
  it('substitutes only the defined variables whose names match NGINX_ENVSUBST_FILTER', async () => {
    await writeFile(join(dir, 'templates', 'default.conf.template'),
      'listen ${NGINX_LISTEN};\nproxy_set_header Host $host;\nroot ${WEB_ROOT};\nset $x ${UNSET_ONE};\n');
    await hook({ NGINX_ENVSUBST_FILTER: '^(NGINX_LISTEN|UNSET_ONE)$', NGINX_LISTEN: '8080', WEB_ROOT: '/srv', host: 'evil' });
    expect(await readFile(join(dir, 'out', 'default.conf'), 'utf8'))
      .toBe('listen 8080;\nproxy_set_header Host $host;\nroot ${WEB_ROOT};\nset $x ${UNSET_ONE};\n');
  });

  it('substitutes every defined variable when no filter is set, keeping sub-directories and dropping the suffix', async () => {
    await writeFile(join(dir, 'templates', 'sub', 'api.conf.template'), 'root ${WEB_ROOT}; $request_id\n');
    await writeFile(join(dir, 'templates', 'ignored.conf'), 'not a template\n');
    await hook({ WEB_ROOT: '/srv' });
    expect(await readFile(join(dir, 'out', 'sub', 'api.conf'), 'utf8')).toBe('root /srv; $request_id\n');
    await expect(readFile(join(dir, 'out', 'ignored.conf'), 'utf8')).rejects.toThrow(/ENOENT/);
  });

  it('leaves an unwritable output directory alone and says so', async () => {
    await writeFile(join(dir, 'templates', 'default.conf.template'), 'x\n');
    const { stderr } = await hook({ NGINX_ENVSUBST_OUTPUT_DIR: join(dir, 'missing'), NGINX_ENTRYPOINT_QUIET_LOGS: '' });
    expect(stderr).toMatch(/is not writable/);
  });
});

describe('nginx stand-in: entry point', () => {
  it('runs executable *.sh hooks and sources *.envsh ones only for an nginx command, then execs it', async () => {
    // The entry point reads the fixed /docker-entrypoint.d: exercise its logic on a copy pointed here.
    const hooks = join(dir, 'hooks');
    await mkdir(hooks);
    await writeFile(join(hooks, '10-env.envsh'), 'export FROM_ENVSH=yes\n');
    await writeFile(join(hooks, '20-run.sh'), `#!/bin/sh\necho ran > "${join(dir, 'ran')}"\n`);
    await writeFile(join(hooks, '30-skip.sh'), `#!/bin/sh\necho ran > "${join(dir, 'skipped')}"\n`);
    await chmod(join(hooks, '10-env.envsh'), 0o755);
    await chmod(join(hooks, '20-run.sh'), 0o755);
    const script = (await readFile(ENTRYPOINT, 'utf8')).replaceAll('/docker-entrypoint.d', hooks);
    await writeFile(join(dir, 'entrypoint.sh'), script);
    const nginxLike = join(dir, 'nginx');
    await writeFile(nginxLike, '#!/bin/sh\necho "exec:$FROM_ENVSH:$*"\n');
    await chmod(nginxLike, 0o755);
    const env = { PATH: `${dir}:${process.env['PATH'] ?? '/usr/bin:/bin'}` };
    const { stdout, stderr } = await run('sh', [join(dir, 'entrypoint.sh'), 'nginx', '-g', 'daemon off;'], { env });
    expect(stdout.trim()).toBe('exec:yes:-g daemon off;');
    expect(await readFile(join(dir, 'ran'), 'utf8')).toBe('ran\n');
    await expect(readFile(join(dir, 'skipped'), 'utf8')).rejects.toThrow(/ENOENT/);
    expect(stderr).toMatch(/ignoring .*30-skip\.sh, not executable/);
    // Any other command: no hooks at all.
    await rm(join(dir, 'ran'));
    const other = await run('sh', [join(dir, 'entrypoint.sh'), 'echo', 'plain'], { env });
    expect(other.stdout.trim()).toBe('plain');
    await expect(readFile(join(dir, 'ran'), 'utf8')).rejects.toThrow(/ENOENT/);
  });
});
