// @ts-check
// The sign-in page: says why the user is here (the reason the dashboard was given by
// /api/session), posts the name and password as JSON, and goes back to the dashboard.

/** What each 401 reason (and a sign-out) means to the person at the screen. */
const REASONS = /** @type {Record<string, string>} */ ({
  signed_out: 'Sign in to see your devices.',
  expired: 'Your session has expired. Sign in again.',
  revoked: 'Your session was ended. Sign in again.',
  invalid: 'Your sign-in is no longer valid. Sign in again.',
  unknown_user: 'Your account no longer exists. Ask an administrator.',
  bye: 'You have signed out.',
});

/**
 * @template {Element} T
 * @param {string} selector
 * @param {new (...args: any[]) => T} type
 * @returns {T}
 */
function $(selector, type) {
  const el = document.querySelector(selector);
  if (!(el instanceof type)) throw new Error(`missing ${selector}`);
  return el;
}

const form = $('#signin-form', HTMLFormElement);
const user = $('#signin-user', HTMLInputElement);
const password = $('#signin-password', HTMLInputElement);
const submit = $('#signin-submit', HTMLButtonElement);
const reason = $('#signin-reason', HTMLElement);
const error = $('#signin-error', HTMLElement);

const given = new URLSearchParams(location.search).get('reason') ?? 'signed_out';
reason.textContent = REASONS[given] ?? REASONS['signed_out'] ?? '';

/** @param {string} text */
function showError(text) {
  error.textContent = text;
  error.hidden = text === '';
}

// Already signed in (another tab did it), or sign-in is off: straight to the dashboard.
fetch('/api/session', { cache: 'no-store' }).then((res) => {
  if (res.ok) location.replace('./');
}, () => undefined);

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  if (user.value.trim() === '' || password.value === '') {
    showError('Enter your user name and password.');
    (user.value.trim() === '' ? user : password).focus();
    return;
  }
  submit.setAttribute('aria-disabled', 'true');
  submit.disabled = true;
  try {
    const res = await fetch('/api/session', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user: user.value.trim(), password: password.value }),
    });
    if (res.ok) {
      location.replace('./');
      return;
    }
    const body = await res.json().catch(() => null);
    if (res.status === 429) showError(body?.message ?? 'Too many attempts; wait a moment and try again.');
    else if (res.status === 401) showError('Wrong user name or password.');
    else showError(body?.message ?? `Sign-in failed (HTTP ${res.status}).`);
    password.value = '';
    password.focus();
  } catch {
    showError('The server could not be reached. Try again.');
  } finally {
    submit.disabled = false;
    submit.removeAttribute('aria-disabled');
  }
});

user.focus();
