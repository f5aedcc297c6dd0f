import type { Context } from 'koa';
import type { HttpRoute } from '../metrics.js';
import { HttpError } from './errors.js';

export type Handler = (ctx: Context, params: string[]) => void | Promise<void>;

interface Route {
  name: HttpRoute;
  pattern: RegExp;
  methods: Partial<Record<string, Handler>>;
}

/**
 * A small, fixed route table. Route names double as the `route` metric label, so labels stay a
 * short known list whatever paths clients send.
 */
export class Router {
  private readonly routes: Route[] = [];

  on(name: HttpRoute, pattern: RegExp, methods: Partial<Record<'GET' | 'POST' | 'DELETE', Handler>>): this {
    this.routes.push({ name, pattern, methods });
    return this;
  }

  private match(path: string): { route: Route; params: string[] } | undefined {
    for (const route of this.routes) {
      const m = route.pattern.exec(path);
      if (m) return { route, params: m.slice(1).map((p) => safeDecode(p)) };
    }
    return undefined;
  }

  routeName(path: string): HttpRoute {
    return this.match(path)?.route.name ?? 'unmatched';
  }

  async dispatch(ctx: Context): Promise<void> {
    const found = this.match(ctx.path);
    if (!found) throw new HttpError(404, 'not_found', 'No such resource.');
    const { route, params } = found;
    const method = ctx.method === 'HEAD' && route.name !== '/events' ? 'GET' : ctx.method;
    const handler = route.methods[method];
    if (!handler) {
      const allowed = Object.keys(route.methods).join(', ');
      throw new HttpError(405, 'method_not_allowed', `Use ${allowed} on this resource.`, { Allow: allowed });
    }
    await handler(ctx, params);
  }
}

function safeDecode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}
