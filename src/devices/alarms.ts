// What a device is alarmed about right now, and what it said lately: so that a page that opens,
// or a client that was reset, sees the alerts it could not have received live.

import { ALERT_HISTORY, MAX_ACTIVE_ALARMS, type Severity } from '../protocol.js';

/** One alert as the service keeps and shows it. */
export interface AlertView {
  type: string;
  severity: Severity;
  message: string;
  /** The device's own timestamp: data, shown; never used for order. */
  ts: number;
  seq: number;
  /** When the service received it (epoch ms, the service's clock): the order of record. */
  at: number;
}

/**
 * An alert's `at`: when the service received it. A retained copy (delivered on subscribe, e.g.
 * after a restart) is history, not news: it is dated by its own ts, so an alarm raised days ago
 * does not read "since" the restart. A retained ts ahead of now is a wrong clock and says nothing:
 * the alert is dated by the device's last seen as it stood (the latest moment the service can
 * vouch for), or 0 (unknown) when there is none, as last seen ignores such a ts too.
 */
export function alertAt(ts: number, now: number, retained: boolean, lastSeen: number | null): number {
  if (!retained) return now;
  return ts <= now ? ts : (lastSeen ?? 0);
}

const RANK: Record<Severity, number> = { info: 0, warning: 1, critical: 2 };

/** Most severe first, then newest (by arrival) first. */
function before(a: AlertView, b: AlertView): boolean {
  return RANK[a.severity] > RANK[b.severity] || (a.severity === b.severity && a.at > b.at);
}

/**
 * Per device: the active alarm of each alert type (the latest alert of that type above `info`,
 * until an `info` alert of the same type, the device's "back to normal", clears it), and the last
 * ALERT_HISTORY alerts, oldest first. Both bounded, whatever a device sends.
 */
export class AlertLog {
  readonly alarms: AlertView[] = [];
  readonly recent: AlertView[] = [];
  private encoded: string | undefined;

  /**
   * `"alarms":[…],"alerts":[…]`, encoded once per change: a device's view is re-encoded on every
   * reading it sends, and this part (up to ~6 KiB) changes only with its alerts.
   */
  get json(): string {
    return (this.encoded ??= `"alarms":${JSON.stringify(this.alarms)},"alerts":${JSON.stringify(this.recent)}`);
  }

  /** A log as a view shows it (a checkpoint of the shared log): its alarms and recent alerts as they are, within bounds. */
  static from(alarms: readonly AlertView[], recent: readonly AlertView[]): AlertLog {
    const log = new AlertLog();
    log.alarms.push(...alarms.slice(0, MAX_ACTIVE_ALARMS));
    log.recent.push(...recent.slice(-ALERT_HISTORY));
    return log;
  }

  add(alert: AlertView): void {
    this.encoded = undefined;
    this.recent.push(alert);
    if (this.recent.length > ALERT_HISTORY) this.recent.shift();
    const existing = this.alarms.findIndex((a) => a.type === alert.type);
    if (existing >= 0) this.alarms.splice(existing, 1);
    if (alert.severity === 'info') return;
    if (this.alarms.length >= MAX_ACTIVE_ALARMS) {
      // Full of other types: the least severe, oldest gives way, unless it outranks the newcomer.
      const last = this.alarms[this.alarms.length - 1]!;
      if (RANK[last.severity] > RANK[alert.severity]) return;
      this.alarms.pop();
    }
    let at = 0;
    while (at < this.alarms.length && before(this.alarms[at]!, alert)) at += 1;
    this.alarms.splice(at, 0, alert);
  }
}
