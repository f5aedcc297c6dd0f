import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/** One JSON logger to stdout; secrets never reach a log line. */
export function createLogger(level: LevelWithSilent, name: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      name,
      level,
      base: { pid: process.pid },
      redact: {
        paths: [
          'req.headers.authorization',
          'req.headers.cookie',
          'headers.authorization',
          'config.mqtt.password',
          'config.commands.token',
          '*.password',
          '*.token',
        ],
        censor: '[redacted]',
      },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    // Synchronous: log lines are few (never one per message) and none is lost at exit.
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}

/**
 * Lets one line per key through per window and counts the rest, so a device that floods
 * bad payloads costs one log line a minute instead of one per message.
 */
export class RateLimitedLog {
  private readonly seen = new Map<string, { until: number; suppressed: number }>();

  constructor(
    private readonly logger: Logger,
    private readonly windowMs = 60_000,
    private readonly maxKeys = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  warn(key: string, fields: Record<string, unknown>, message: string): void {
    const now = this.now();
    const entry = this.seen.get(key);
    if (entry && entry.until > now) {
      entry.suppressed += 1;
      return;
    }
    const suppressed = entry?.suppressed ?? 0;
    if (!entry && this.seen.size >= this.maxKeys) this.prune(now);
    this.seen.set(key, { until: now + this.windowMs, suppressed: 0 });
    this.logger.warn(suppressed > 0 ? { ...fields, suppressed } : fields, message);
  }

  private prune(now: number): void {
    for (const [key, entry] of this.seen) {
      if (entry.until <= now) this.seen.delete(key);
    }
    // Still full of live keys: forget the oldest rather than grow.
    while (this.seen.size >= this.maxKeys) {
      const oldest = this.seen.keys().next().value;
      if (oldest === undefined) break;
      this.seen.delete(oldest);
    }
  }
}

/** A URL fit for a log line: its password replaced. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = 'redacted';
    return u.toString();
  } catch {
    return '[invalid url]';
  }
}
