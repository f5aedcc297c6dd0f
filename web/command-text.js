// @ts-check
// What a device card says about a command: from the HTTP answer to our own request, and from the
// `command` events every stream carries (any operator's commands). No DOM, so unit-tested directly.

import { commandLabel } from './format.js';

/** @typedef {import('./types.js').CommandStatus} CommandStatus */
/** @typedef {{ id: string | null, status: CommandStatus, text: string }} CommandOutcome */

/** What each 503 of the command API (service or nginx) means for the person who clicked. */
/** @type {Record<string, string>} */
const UNAVAILABLE_TEXT = {
  commands_disabled: 'commands are disabled on this server (no COMMAND_TOKEN)',
  busy: 'too many commands in flight, try again shortly',
  broker_unavailable: 'the broker is unreachable, try again shortly',
  unavailable: 'the service is unreachable, try again shortly',
};

/**
 * Card text for the HTTP answer to our own command request.
 * @param {string} label the command's label (commandLabel)
 * @param {number} status
 * @param {any} body the JSON body, or null
 * @returns {CommandOutcome}
 */
export function describeAnswer(label, status, body) {
  const id = typeof body?.id === 'string' ? body.id : null;
  const message = typeof body?.message === 'string' ? body.message : '';
  switch (status) {
    case 200: {
      const ms = typeof body?.roundtripMs === 'number' ? ` in ${Math.round(body.roundtripMs)} ms` : '';
      if (body?.ok === true) return { id, status: 'acked', text: `${label} acknowledged${ms}` };
      const why = typeof body?.error === 'string' && body.error ? `: ${body.error}` : '';
      return { id, status: 'failed', text: `${label} failed${why}` };
    }
    case 504:
      return { id, status: 'timeout', text: `${label} timed out: no answer from the device` };
    case 409:
      // Offline before anything was sent, or gone offline while the command waited: the
      // service's message says which (and how long a device that reconnects may still run it).
      return { id, status: 'offline', text: `${label}: ${message || 'the device is offline'}` };
    case 404:
      return { id, status: 'error', text: `${label} not sent: unknown device` };
    case 403:
      return { id, status: 'error', text: `${label} not sent: ${body?.error === 'forbidden' ? 'your role cannot send commands' : message || 'refused'}` };
    case 400:
    case 413:
      return { id, status: 'error', text: `${label} rejected${message ? `: ${message}` : ''}` };
    case 503:
      return { id, status: 'error', text: `${label} not sent: ${UNAVAILABLE_TEXT[String(body?.error)] ?? 'service unavailable, try again shortly'}` };
    default:
      return { id, status: 'error', text: `${label} failed: server answered ${status}${message ? ` (${message})` : ''}` };
  }
}

/**
 * Card text for a `command` event on the stream, from us or any other operator.
 * @param {import('./types.js').CommandEvent} ev
 * @returns {CommandOutcome}
 */
export function describeEvent(ev) {
  const label = commandLabel(String(ev.name ?? 'command'));
  const ms = typeof ev.durationMs === 'number' ? ` in ${Math.round(ev.durationMs)} ms` : '';
  const id = typeof ev.id === 'string' ? ev.id : null;
  switch (ev.status) {
    case 'sent':
      return { id, status: 'sent', text: `${label} sent, waiting for the device…` };
    case 'acked':
      return { id, status: 'acked', text: `${label} acknowledged${ms}` };
    case 'failed':
      return { id, status: 'failed', text: `${label} failed${ev.error ? `: ${ev.error}` : ''}` };
    case 'timeout':
      return { id, status: 'timeout', text: `${label} timed out: no answer from the device` };
    case 'offline':
      return { id, status: 'offline', text: `${label} not confirmed: the device went offline before acknowledging` };
    default:
      return { id, status: 'error', text: `${label}: ${String(ev.status)}` };
  }
}
