// @ts-check
// Sending commands: the operator token (asked once per tab in a <dialog>, kept in
// sessionStorage, asked again after a 401) and the request; command-text.js words the outcome.

import { describeAnswer } from './command-text.js';
import { commandLabel } from './format.js';
import { COMMAND_TIMEOUT_DEFAULT_MS } from './protocol.js';

/** @typedef {import('./command-text.js').CommandOutcome} CommandOutcome */

const TOKEN_KEY = 'live-devices.command-token';
const COMMAND_TIMEOUT_MS = COMMAND_TIMEOUT_DEFAULT_MS;
/** Extra time the HTTP request may take beyond the device timeout before we give up on it. */
const HTTP_SLACK_MS = 5000;

export class TokenPrompt {
  /** @param {HTMLDialogElement} dialog */
  constructor(dialog) {
    this.dialog = dialog;
    const input = dialog.querySelector('#token-input');
    const error = dialog.querySelector('#token-error');
    if (!(input instanceof HTMLInputElement) || !(error instanceof HTMLElement)) throw new Error('token dialog is incomplete');
    this.input = input;
    this.error = error;
    dialog.querySelector('[data-action="cancel"]')?.addEventListener('click', () => dialog.close('cancel'));
    /** One prompt at a time: concurrent commands share it. */
    /** @type {Promise<string | null> | null} */
    this.pending = null;
  }

  /** @returns {string | null} */
  stored() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null; // storage disabled: ask every time
    }
  }

  clear() {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      /* storage disabled */
    }
  }

  /**
   * Opens the dialog; resolves with the token, or null if the user cancelled.
   * @param {string} [problem] shown above the field, e.g. after a rejected token
   * @returns {Promise<string | null>}
   */
  ask(problem) {
    if (this.pending) return this.pending;
    const opener = document.activeElement;
    this.error.hidden = !problem;
    this.error.textContent = problem ?? '';
    this.input.value = '';
    this.dialog.returnValue = '';
    this.pending = new Promise((resolve) => {
      this.dialog.addEventListener(
        'close',
        () => {
          this.pending = null;
          const token = this.input.value.trim();
          this.input.value = '';
          if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
          if (this.dialog.returnValue !== 'save' || token === '') return resolve(null);
          try {
            sessionStorage.setItem(TOKEN_KEY, token);
          } catch {
            /* storage disabled: the token still works for this command */
          }
          resolve(token);
        },
        { once: true },
      );
    });
    this.dialog.showModal();
    this.input.focus();
    return this.pending;
  }
}

/**
 * One POST of a command: the status and JSON body, or the outcome of a request that failed.
 * @param {string} label
 * @param {string} device
 * @param {string} name
 * @param {Record<string, unknown>} params
 * @param {Record<string, string>} headers
 * @returns {Promise<{ status: number, body: any } | { failed: CommandOutcome }>}
 */
async function postCommand(label, device, name, params, headers) {
  try {
    const res = await fetch(`/api/devices/${encodeURIComponent(device)}/commands`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...headers },
      body: JSON.stringify({ name, params, timeoutMs: COMMAND_TIMEOUT_MS }),
      signal: AbortSignal.timeout(COMMAND_TIMEOUT_MS + HTTP_SLACK_MS),
    });
    return { status: res.status, body: await res.json().catch(() => null) };
  } catch (err) {
    const timedOut = err instanceof DOMException && err.name === 'TimeoutError';
    return { failed: { id: null, status: 'error', text: timedOut ? `${label}: no answer from the server` : `${label}: network error, not confirmed` } };
  }
}

/**
 * Sends one command and describes the outcome. Never throws.
 * @param {TokenPrompt | null} tokens null when signed in (the cookie authenticates)
 * @param {string} device
 * @param {string} name
 * @param {Record<string, unknown>} params
 * @returns {Promise<CommandOutcome>}
 */
export async function sendCommand(tokens, device, name, params) {
  const label = commandLabel(name);
  // Signed in: the session cookie goes with the request; no token to ask for. A 401 means the
  // session ended: the page goes to sign in.
  if (tokens === null) {
    const answer = await postCommand(label, device, name, params, {});
    if ('failed' in answer) return answer.failed;
    if (answer.status === 401) {
      location.assign(`signin.html?reason=${encodeURIComponent(String(answer.body?.error ?? 'signed_out'))}`);
      return { id: null, status: 'error', text: `${label} not sent: signed out` };
    }
    return describeAnswer(label, answer.status, answer.body);
  }
  let token = tokens.stored() ?? (await tokens.ask());
  // A rejected token is asked for again; a few tries, then the user can click again.
  for (let attempt = 0; attempt < 3; attempt++) {
    if (token === null) return { id: null, status: 'error', text: `${label} not sent: no command token` };
    const answer = await postCommand(label, device, name, params, { Authorization: `Bearer ${token}` });
    if ('failed' in answer) return answer.failed;
    if (answer.status === 401) {
      tokens.clear();
      token = await tokens.ask('That token was not accepted. Check it and try again.');
      continue;
    }
    return describeAnswer(label, answer.status, answer.body);
  }
  return { id: null, status: 'error', text: `${label} not sent: token rejected` };
}
