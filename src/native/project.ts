import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

// This file sits at src/native/ (run by vitest) and dist/native/ (compiled): two levels below
// the repository root either way.
export const PROJECT_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * The deployment files. docker-compose.yml mounts these exact paths, and the native stack
 * starts the distribution's binaries from them, so both run the same configuration.
 */
export const PROJECT_FILES = {
  mosquittoDir: join(PROJECT_ROOT, 'mosquitto'),
  mosquittoConf: join(PROJECT_ROOT, 'mosquitto', 'mosquitto.conf'),
  mosquittoDynsecTemplate: join(PROJECT_ROOT, 'mosquitto', 'dynamic-security.template.json'),
  mosquittoEntrypoint: join(PROJECT_ROOT, 'mosquitto', 'docker-entrypoint.sh'),
  nginxConf: join(PROJECT_ROOT, 'nginx', 'nginx.conf'),
  nginxTemplatesDir: join(PROJECT_ROOT, 'nginx', 'templates'),
  nginxTemplate: join(PROJECT_ROOT, 'nginx', 'templates', 'default.conf.template'),
  prometheusConf: join(PROJECT_ROOT, 'prometheus', 'prometheus.yml'),
  redisDir: join(PROJECT_ROOT, 'redis'),
  redisConf: join(PROJECT_ROOT, 'redis', 'redis.conf'),
  webRoot: join(PROJECT_ROOT, 'web'),
  composeFile: join(PROJECT_ROOT, 'docker-compose.yml'),
} as const;
