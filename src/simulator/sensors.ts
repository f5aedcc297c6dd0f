import { between, clamp, gaussian, round, type Random } from './random.js';

export interface Metrics {
  temperature: number;
  humidity: number;
  battery: number;
  rssi: number;
}

export const LIMITS = {
  temperature: { min: -20, max: 80 },
  humidity: { min: 20, max: 90 },
  battery: { min: 0, max: 100 },
  rssi: { min: -100, max: -30 },
} as const;

/** What makes one device differ from the next: its room, its radio, its battery. */
export interface SensorProfile {
  baseTemperature: number;
  baseHumidity: number;
  baseRssi: number;
  batteryStart: number;
  drainPerMin: number;
  chargePerMin: number;
  /** The device is put on charge when the battery falls to this level. */
  chargeBelow: number;
}

function randomProfile(random: Random): SensorProfile {
  return {
    baseTemperature: between(random, 18, 26),
    baseHumidity: between(random, 35, 65),
    baseRssi: between(random, -82, -55),
    batteryStart: between(random, 15, 100),
    // A few hours per charge: slow enough to look real, fast enough to see low-battery alerts in a demo.
    drainPerMin: between(random, 0.3, 0.8),
    chargePerMin: between(random, 4, 8),
    chargeBelow: between(random, 5, 12),
  };
}

/**
 * Mean-reverting step (exact Ornstein–Uhlenbeck update): pulls `x` toward `target` with rate
 * `theta` per second and adds noise of `sigma` per √s. Stable for any step length, so a device
 * told to report once a minute does not overshoot.
 */
function meanRevert(random: Random, x: number, target: number, theta: number, sigma: number, dtS: number): number {
  const decay = Math.exp(-theta * dtS);
  const spread = sigma * Math.sqrt((1 - decay * decay) / (2 * theta));
  return target + (x - target) * decay + spread * gaussian(random);
}

/** Believable random walks for one device. Call `step` once per reading. */
export class Sensors {
  private temperature: number;
  private humidity: number;
  private battery: number;
  private rssi: number;
  private charging = false;
  // An excursion is a heat event (a door left open to the sun, a failing fan): the temperature
  // target jumps for a while, which is what drives the threshold alerts.
  private excursion = { offset: 0, remainingS: 0 };

  constructor(
    private readonly random: Random,
    readonly profile: SensorProfile = randomProfile(random),
  ) {
    this.temperature = profile.baseTemperature;
    this.humidity = profile.baseHumidity;
    this.battery = profile.batteryStart;
    this.rssi = profile.baseRssi;
  }

  step(dtMs: number): Metrics {
    const dtS = Math.max(0.001, dtMs / 1000);
    const { random, profile } = this;

    if (this.excursion.remainingS > 0) {
      this.excursion.remainingS -= dtS;
      if (this.excursion.remainingS <= 0) this.excursion.offset = 0;
    } else if (random() < dtS / 600) {
      // About one excursion per device every ten minutes.
      this.excursion = { offset: between(random, 10, 28), remainingS: between(random, 30, 180) };
    }
    const hot = this.excursion.offset;

    this.temperature = clamp(
      meanRevert(random, this.temperature, profile.baseTemperature + hot, 0.05, 0.08, dtS),
      LIMITS.temperature.min, LIMITS.temperature.max);
    // Warm air holds more water, so relative humidity drops while it is hot: toward 25 %, never past it.
    const humidityTarget = 25 + (profile.baseHumidity - 25) * Math.exp(-hot / 25);
    this.humidity = clamp(
      meanRevert(random, this.humidity, humidityTarget, 0.01, 0.3, dtS),
      LIMITS.humidity.min, LIMITS.humidity.max);
    this.rssi = clamp(
      meanRevert(random, this.rssi, profile.baseRssi, 0.1, 1.5, dtS),
      LIMITS.rssi.min, LIMITS.rssi.max);

    if (this.charging && this.battery >= 99) this.charging = false;
    else if (!this.charging && this.battery <= profile.chargeBelow) this.charging = true;
    const perMin = this.charging ? profile.chargePerMin : -profile.drainPerMin;
    this.battery = clamp(this.battery + (perMin * dtS) / 60 + 0.02 * gaussian(random),
      LIMITS.battery.min, LIMITS.battery.max);

    return {
      temperature: round(this.temperature, 2),
      humidity: round(this.humidity, 1),
      battery: round(this.battery, 1),
      rssi: Math.round(this.rssi),
    };
  }
}
