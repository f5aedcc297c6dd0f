/** An error meant to be shown: its status, code and message go to the client as they are. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export interface ErrorBody {
  error: string;
  message: string;
}

const GENERIC: Record<number, [string, string]> = {
  400: ['bad_request', 'The request is malformed.'],
  404: ['not_found', 'No such resource.'],
  405: ['method_not_allowed', 'Method not allowed on this resource.'],
  413: ['payload_too_large', 'The request body is too large.'],
  415: ['unsupported_media_type', 'Send the body as application/json.'],
  500: ['internal', 'Internal server error.'],
};

/** Turns anything thrown into a status and a JSON body; internals never leak into the message. */
export function toErrorResponse(err: unknown): { status: number; body: ErrorBody; headers: Record<string, string> } {
  if (err instanceof HttpError) {
    return { status: err.status, body: { error: err.code, message: err.message }, headers: { ...err.headers } };
  }
  const e = err as { status?: unknown; expose?: unknown; message?: unknown };
  const status = typeof e?.status === 'number' && e.status >= 400 && e.status < 600 ? e.status : 500;
  const [code, generic] = GENERIC[status] ?? (status < 500 ? GENERIC[400]! : GENERIC[500]!);
  const message = e?.expose === true && typeof e.message === 'string' ? e.message : generic;
  return { status, body: { error: code, message }, headers: {} };
}
