// Typed readers for environment variables. Each reader records a problem instead of throwing,
// so a bad start reports every wrong variable at once, one line each, then exits 1.

export type Env = Readonly<Record<string, string | undefined>>;

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
  }
}

export class EnvReader {
  private readonly problems: string[] = [];

  constructor(private readonly env: Env) {}

  private raw(name: string): string | undefined {
    const value = this.env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  }

  private fail<T>(name: string, value: string, allowed: string, fallback: T): T {
    this.problems.push(`${name}=${JSON.stringify(value)} is invalid: expected ${allowed}`);
    return fallback;
  }

  int(name: string, fallback: number, min: number, max: number): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const allowed = `an integer from ${min} to ${max}`;
    if (!/^-?\d+$/.test(value)) return this.fail(name, value, allowed, fallback);
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min || n > max) return this.fail(name, value, allowed, fallback);
    return n;
  }

  number(name: string, fallback: number, min: number, max: number): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max) {
      return this.fail(name, value, `a number from ${min} to ${max}`, fallback);
    }
    return n;
  }

  /** One of `allowed`; `undefined` when unset and no fallback is given. */
  oneOf<T extends string>(name: string, fallback: T, allowed: readonly T[]): T;
  oneOf<T extends string>(name: string, fallback: undefined, allowed: readonly T[]): T | undefined;
  oneOf<T extends string>(name: string, fallback: T | undefined, allowed: readonly T[]): T | undefined {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if ((allowed as readonly string[]).includes(value)) return value as T;
    return this.fail(name, value, `one of ${allowed.join(', ')}`, fallback);
  }

  /** A string matching `pattern`; `undefined` when unset and no fallback is given. */
  string(name: string, fallback: string, pattern?: RegExp, allowed?: string): string;
  string(name: string, fallback: undefined, pattern?: RegExp, allowed?: string): string | undefined;
  string(name: string, fallback: string | undefined, pattern?: RegExp, allowed = 'a valid value'): string | undefined {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (pattern && !pattern.test(value)) return this.fail(name, value, allowed, fallback);
    return value;
  }

  /** A secret: never echoed back in an error line. */
  secret(name: string, minLength = 1): string | undefined {
    const value = this.env[name];
    if (value === undefined || value === '') return undefined;
    if (value.length < minLength || /[\r\n\0]/.test(value)) {
      this.problems.push(`${name}=<redacted> is invalid: expected at least ${minLength} characters without line breaks`);
      return undefined;
    }
    return value;
  }

  url(name: string, fallback: string, protocols: readonly string[]): string;
  url(name: string, fallback: undefined, protocols: readonly string[]): string | undefined;
  url(name: string, fallback: string | undefined, protocols: readonly string[]): string | undefined {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const allowed = `a URL with scheme ${protocols.map((p) => `${p}//`).join(', ')}`;
    try {
      const url = new URL(value);
      if (!protocols.includes(url.protocol) || url.hostname === '') return this.fail(name, value, allowed, fallback);
      return value;
    } catch {
      return this.fail(name, value, allowed, fallback);
    }
  }

  /** Adds a problem found by a rule that spans several variables. */
  check(ok: boolean, problem: string): void {
    if (!ok) this.problems.push(problem);
  }

  /** Throws a ConfigError listing every problem, or returns the frozen result. */
  done<T extends object>(result: T): Readonly<T> {
    if (this.problems.length > 0) throw new ConfigError(this.problems);
    return deepFreeze(result);
  }
}

function deepFreeze<T extends object>(value: T): Readonly<T> {
  for (const child of Object.values(value)) {
    if (child !== null && typeof child === 'object') deepFreeze(child as object);
  }
  return Object.freeze(value);
}
