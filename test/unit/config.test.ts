import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LOG_LEVELS, loadConfig } from '../../src/config.js';
import { ConfigError } from '../../src/env.js';
import { COMMAND_TIMEOUT_DEFAULT_MS, COMMAND_TIMEOUT_MAX_MS, COMMAND_TIMEOUT_MIN_MS, DEFAULT_TOPIC_PREFIX } from '../../src/protocol.js';

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig({ AUTH: 'off', ...env });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return [...(err as ConfigError).problems];
  }
  throw new Error('expected a ConfigError');
}

describe('configuration', () => {
  it('has the documented defaults', () => {
    const config = loadConfig({ AUTH: 'off' });
    expect(config.port).toBe(3000);
    expect(config.host).toBe('0.0.0.0');
    expect(config.listenBacklog).toBe(4096);
    expect(config.socket).toBeUndefined();
    expect(config.mqtt.url).toBe('mqtt://localhost:1883');
    expect(config.mqtt.topicPrefix).toBe(DEFAULT_TOPIC_PREFIX);
    expect(config.mqtt.maxPayloadBytes).toBe(65536);
    expect(config.sse).toEqual({
      heartbeatMs: 15000,
      retryMs: 3000,
      replaySize: 10000,
      maxClients: 20000,
      clientBufferBytes: 1048576,
      coalesceMs: 10,
      writesPerSecond: 150,
    });
    expect(config.commands).toEqual({ token: undefined, timeoutMs: COMMAND_TIMEOUT_DEFAULT_MS });
    expect(config.shutdownDrainMs).toBe(10000);
    expect(config.logLevel).toBe('info');
  });

  it('is frozen all the way down', () => {
    const config = loadConfig({ AUTH: 'off' });
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.sse)).toBe(true);
  });

  it('names the variable, the value and what is allowed for each bad value, all at once', () => {
    const found = problems({ PORT: 'eighty', SSE_HEARTBEAT_MS: '-5', LOG_LEVEL: 'loud', MQTT_URL: 'http://x' });
    expect(found).toHaveLength(4);
    expect(found).toContain('PORT="eighty" is invalid: expected an integer from 0 to 65535');
    expect(found.join('\n')).toContain('SSE_HEARTBEAT_MS="-5" is invalid: expected an integer from 50 to 55000');
    expect(found.join('\n')).toContain(`LOG_LEVEL="loud" is invalid: expected one of ${LOG_LEVELS.join(', ')}`);
    expect(found.join('\n')).toContain('MQTT_URL="http://x" is invalid: expected a URL with scheme');
  });

  it('rejects topic prefixes with wildcards and short command tokens without echoing the secret', () => {
    expect(problems({ MQTT_TOPIC_PREFIX: 'devices/#' })[0]).toContain('MQTT_TOPIC_PREFIX="devices/#"');
    const [line] = problems({ COMMAND_TOKEN: 'short' });
    expect(line).toContain('COMMAND_TOKEN=<redacted>');
    expect(line).not.toContain('short');
  });

  it.each([
    ['PORT', '70000'],
    ['HOST', 'bad host!'],
    ['MQTT_URL', 'not a url'],
    ['MQTT_USERNAME', 'a\nb'],
    ['MQTT_PASSWORD', 'a\nb'],
    ['MQTT_CLIENT_ID', 'has space'],
    ['MQTT_TOPIC_PREFIX', '/leading'],
    ['MQTT_MAX_PAYLOAD_BYTES', '10'],
    ['SSE_HEARTBEAT_MS', '1.5'],
    ['SSE_RETRY_MS', 'soon'],
    ['SSE_REPLAY_SIZE', '-1'],
    ['SSE_MAX_CLIENTS', '0'],
    ['SSE_CLIENT_BUFFER_BYTES', '1k'],
    ['SSE_COALESCE_MS', '1001'],
    ['SSE_WRITES_PER_S', '0'],
    ['SSE_WRITES_PER_S', 'many'],
    ['COMMAND_TOKEN', 'too-short'],
    ['COMMAND_TIMEOUT_MS', '0'],
    ['COMMAND_TIMEOUT_MS', String(COMMAND_TIMEOUT_MIN_MS - 1)],
    ['COMMAND_TIMEOUT_MS', String(COMMAND_TIMEOUT_MAX_MS + 1)],
    ['SSE_HEARTBEAT_MS', '60000'],
    ['SHUTDOWN_DRAIN_MS', 'forever'],
    ['HTTP_REQUEST_TIMEOUT_MS', 'never'],
    ['HTTP_REQUEST_TIMEOUT_MS', '-1'],
    ['DEVICE_FORGET_AFTER_S', '-1'],
    ['DEVICE_FORGET_AFTER_S', '1.5'],
    ['DEVICE_ADMIT_RATE', 'fast'],
    ['DEVICE_ADMIT_RATE', '-1'],
    ['DEVICE_ADMIT_BURST', 'x'],
    ['DEVICE_MAX_MSG_RATE', '-1'],
    ['DEVICE_MSG_BURST', '1e3'],
    ['DEVICE_MAX_EVENT_RATE', 'fast'],
    ['DEVICE_EVENT_BURST', '0'],
    ['LOG_LEVEL', 'verbose'],
    ['LISTEN_BACKLOG', '0'],
    ['LISTEN_BACKLOG', '65536'],
    ['SOCKET_PATH', 'relative/app.sock'],
    ['SOCKET_PATH', `/${'a'.repeat(107)}`],
  ])('refuses a bad %s, naming it', (name, value) => {
    const found = problems({ [name]: value });
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(new RegExp(`^${name}=.* is invalid: expected .+`));
  });

  it('takes a Unix socket for nginx with the group that may connect; a group alone opens no socket', () => {
    expect(loadConfig({ AUTH: 'off', SOCKET_PATH: '/run/app/app.sock' }).socket).toEqual({ path: '/run/app/app.sock', group: undefined });
    expect(loadConfig({ AUTH: 'off', SOCKET_PATH: '/run/app/app.sock', SOCKET_GROUP: '101' }).socket).toEqual({ path: '/run/app/app.sock', group: 101 });
    expect(problems({ SOCKET_PATH: '/run/app/app.sock', SOCKET_GROUP: 'nginx' })[0]).toMatch(/^SOCKET_GROUP="nginx" is invalid: expected an integer/);
    expect(loadConfig({ AUTH: 'off', SOCKET_GROUP: '101' }).socket).toBeUndefined();
    expect(problems({ SOCKET_GROUP: '-1' })[0]).toMatch(/^SOCKET_GROUP="-1" is invalid/);
    // 107 bytes fit a socket address; 107 characters of more than one byte each do not.
    expect(loadConfig({ AUTH: 'off', SOCKET_PATH: `/${'a'.repeat(106)}` }).socket?.path).toHaveLength(107);
    expect(problems({ SOCKET_PATH: `/${'é'.repeat(60)}` })[0]).toMatch(/^SOCKET_PATH is 121 bytes long/);
  });

  describe('sign-in (AUTH)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'config-test-'));
    const secretFile = join(dir, 'session-secret');
    writeFileSync(secretFile, `${'s'.repeat(40)}\n`);
    const shortFile = join(dir, 'short');
    writeFileSync(shortFile, 'short\n');
    const allProblems = (env: Record<string, string>): string[] => {
      try {
        loadConfig(env);
      } catch (err) {
        return [...(err as ConfigError).problems];
      }
      return [];
    };

    it('is on by default: without a users file the service refuses to start, saying how to turn it off', () => {
      const found = allProblems({});
      expect(found).toHaveLength(2);
      expect(found[0]).toMatch(/^USERS_FILE must be set: sign-in is on \(AUTH=on, the default\).*AUTH=off/);
      expect(found[1]).toMatch(/^SESSION_SECRET .*or SESSION_SECRET_FILE must be set/);
    });

    it('is off only when asked by name, and then reads no users file', () => {
      const config = loadConfig({ AUTH: 'off', USERS_FILE: '/nonexistent/users.json' });
      expect(config.authOff).toBe(true);
      expect(config.access).toBeUndefined();
      expect(allProblems({ AUTH: 'no' })[0]).toBe('AUTH="no" is invalid: expected one of on, off');
    });

    it('takes the cookie secret from SESSION_SECRET or from SESSION_SECRET_FILE, SESSION_SECRET first', () => {
      const fromFile = loadConfig({ USERS_FILE: '/etc/users.json', SESSION_SECRET_FILE: secretFile });
      expect(fromFile.authOff).toBe(false);
      expect(fromFile.access).toEqual({ usersFile: '/etc/users.json', sessionSecret: 's'.repeat(40), sessionTtlMs: 8 * 3600 * 1000 });
      const direct = loadConfig({ USERS_FILE: '/etc/users.json', SESSION_SECRET: 'd'.repeat(32), SESSION_SECRET_FILE: secretFile });
      expect(direct.access?.sessionSecret).toBe('d'.repeat(32));
    });

    it('names a missing or short secret file, and never echoes a secret', () => {
      expect(allProblems({ USERS_FILE: '/etc/users.json', SESSION_SECRET_FILE: join(dir, 'absent') }))
        .toEqual([`SESSION_SECRET_FILE ${join(dir, 'absent')}: no such file`]);
      expect(allProblems({ USERS_FILE: '/etc/users.json', SESSION_SECRET_FILE: shortFile }))
        .toEqual([`SESSION_SECRET_FILE ${shortFile}: expected one line of at least 32 characters`]);
      const short = allProblems({ USERS_FILE: '/etc/users.json', SESSION_SECRET: 'tiny-secret' });
      expect(short).toEqual(['SESSION_SECRET=<redacted> is invalid: expected at least 32 characters without line breaks']);
      expect(allProblems({ USERS_FILE: 'users.json', SESSION_SECRET: 'd'.repeat(32) })[0]).toBe('USERS_FILE="users.json" is invalid: expected an absolute path');
    });
  });
});

