import type { Severity } from '../protocol.js';
import type { Metrics } from './sensors.js';

export interface Level {
  /** A level is an alarm: `info` is reserved for "back to normal". */
  severity: Exclude<Severity, 'info'>;
  /** The value at which this level is entered... */
  enter: number;
  /** ...and the value it must get back past to leave it. The gap is the hysteresis. */
  exit: number;
}

export interface ThresholdRule {
  metric: keyof Metrics;
  /** Event `type`, one word. */
  type: string;
  /** `above`: high values are bad (temperature); `below`: low values are bad (battery). */
  direction: 'above' | 'below';
  unit: string;
  /** Ordered from the mildest to the worst. */
  levels: readonly Level[];
}

export interface ThresholdEvent {
  type: string;
  severity: Severity;
  message: string;
}

export const DEFAULT_RULES: readonly ThresholdRule[] = [
  {
    metric: 'temperature', type: 'temperature-high', direction: 'above', unit: ' °C',
    levels: [{ severity: 'warning', enter: 35, exit: 32 }, { severity: 'critical', enter: 45, exit: 42 }],
  },
  {
    metric: 'battery', type: 'battery-low', direction: 'below', unit: ' %',
    levels: [{ severity: 'warning', enter: 20, exit: 25 }, { severity: 'critical', enter: 10, exit: 15 }],
  },
  {
    metric: 'rssi', type: 'signal-weak', direction: 'below', unit: ' dBm',
    levels: [{ severity: 'warning', enter: -90, exit: -85 }],
  },
];

/**
 * The level (0 = normal, i = levels[i-1]) after seeing `value` at level `current`. Rising needs
 * the `enter` value; falling needs the `exit` value of every level left, so a reading that
 * hovers around one limit does not flap.
 */
export function nextLevel(rule: ThresholdRule, current: number, value: number): number {
  const beyond = (limit: number) => (rule.direction === 'above' ? value >= limit : value <= limit);
  const within = (limit: number) => (rule.direction === 'above' ? value < limit : value > limit);
  let level = current;
  while (level > 0 && within(rule.levels[level - 1]!.exit)) level -= 1;
  for (let i = rule.levels.length; i > level; i--) {
    if (beyond(rule.levels[i - 1]!.enter)) return i;
  }
  return level;
}

function describe(rule: ThresholdRule, from: number, to: number, value: number): ThresholdEvent {
  const reading = `${rule.metric} ${value}${rule.unit}`;
  const word = rule.direction === 'above' ? 'above' : 'below';
  if (to === 0) return { type: rule.type, severity: 'info', message: `${reading}: back to normal` };
  const level = rule.levels[to - 1]!;
  const message = to > from
    ? `${reading}: ${word} the ${level.severity} limit of ${level.enter}${rule.unit}`
    : `${reading}: easing, still ${word} the ${level.severity} limit of ${level.enter}${rule.unit}`;
  return { type: rule.type, severity: level.severity, message };
}

/** Watches one device's readings; reports only changes of level, never the same level twice. */
export class ThresholdMonitor {
  private readonly levels: number[];

  constructor(private readonly rules: readonly ThresholdRule[] = DEFAULT_RULES) {
    this.levels = rules.map(() => 0);
  }

  update(metrics: Metrics): ThresholdEvent[] {
    const events: ThresholdEvent[] = [];
    this.rules.forEach((rule, i) => {
      const value = metrics[rule.metric];
      const from = this.levels[i]!;
      const to = nextLevel(rule, from, value);
      if (to === from) return;
      this.levels[i] = to;
      events.push(describe(rule, from, to, value));
    });
    return events;
  }
}
