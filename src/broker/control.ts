// A client of Mosquitto's dynamic security plugin over its control topic: JSON commands
// published to $CONTROL/dynamic-security/v1, one answer per command on .../response. The same
// API `mosquitto_ctrl dynsec` speaks, spoken here with mqtt.js so that `npm run devices`, the
// native stack and the compose provisioning need nothing but a URL and the admin login.
import { randomBytes } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';

export const CONTROL_TOPIC = '$CONTROL/dynamic-security/v1';
export const RESPONSE_TOPIC = `${CONTROL_TOPIC}/response`;
const DEFAULT_TIMEOUT_MS = 5_000;

export interface DynsecCommand {
  command: string;
  [field: string]: unknown;
}

export interface DynsecResponse {
  command: string;
  error?: string;
  data?: unknown;
  correlationData?: string;
}

export interface AdminLogin {
  url: string;
  username: string;
  password: string;
  timeoutMs?: number;
}

/** The broker or the plugin said no, or did not answer: the message says which and what to check. */
export class BrokerAdminError extends Error {}

export class DynsecAdmin {
  private queue: Promise<unknown> = Promise.resolve();
  private waiting: ((responses: DynsecResponse[]) => void) | undefined;

  private constructor(
    private readonly client: MqttClient,
    private readonly timeoutMs: number,
  ) {
    client.on('message', (topic, payload) => {
      if (topic !== RESPONSE_TOPIC) return;
      const responses = parseResponses(payload);
      if (responses) this.waiting?.(responses);
    });
  }

  static async connect(login: AdminLogin): Promise<DynsecAdmin> {
    const timeoutMs = login.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    let client: MqttClient;
    try {
      client = await mqtt.connectAsync(login.url, {
        protocolVersion: 5,
        clientId: `broker-admin-${randomBytes(6).toString('hex')}`,
        username: login.username,
        password: login.password,
        reconnectPeriod: 0,
        connectTimeout: timeoutMs,
        clean: true,
      });
    } catch (err) {
      const message = (err as Error).message;
      if (/not authori[sz]ed|bad user name or password/i.test(message)) {
        throw new BrokerAdminError(`the broker at ${safeUrl(login.url)} refused the admin login "${login.username}" (MQTT_ADMIN_USERNAME / MQTT_ADMIN_PASSWORD): ${message}`);
      }
      throw new BrokerAdminError(`cannot reach the broker at ${safeUrl(login.url)} (MQTT_URL): ${message}`);
    }
    const notAdmin = `"${login.username}" may not read ${RESPONSE_TOPIC}: is it the dynamic security admin (role admin)?`;
    const granted = await client.subscribeAsync(RESPONSE_TOPIC, { qos: 1 }).catch(async (err: Error) => {
      await client.endAsync(true);
      throw new BrokerAdminError(/not authori[sz]ed/i.test(err.message) ? notAdmin : `cannot subscribe to ${RESPONSE_TOPIC}: ${err.message}`);
    });
    // A SUBACK refusal that mqtt.js passes on instead of rejecting (reason code 0x80 or above).
    if (granted.some((g) => g.qos > 2)) {
      await client.endAsync(true);
      throw new BrokerAdminError(notAdmin);
    }
    return new DynsecAdmin(client, timeoutMs);
  }

  /**
   * Sends the commands in one message and resolves with one response per command, in order.
   * Calls are serialised: the plugin answers each message with one response message.
   */
  run(commands: readonly DynsecCommand[]): Promise<DynsecResponse[]> {
    const next = this.queue.then(() => this.send(commands));
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** One command; a plugin error becomes a BrokerAdminError unless `tolerate` matches it. */
  async one(command: DynsecCommand, tolerate?: RegExp): Promise<DynsecResponse> {
    const [response] = await this.run([command]);
    if (response!.error && !tolerate?.test(response!.error)) {
      throw new BrokerAdminError(`${command.command}: ${response!.error}`);
    }
    return response!;
  }

  async close(): Promise<void> {
    await this.client.endAsync().catch(() => this.client.endAsync(true));
  }

  private async send(commands: readonly DynsecCommand[]): Promise<DynsecResponse[]> {
    const tag = randomBytes(6).toString('hex');
    const tagged = commands.map((c, i) => ({ ...c, correlationData: `${tag}-${i}` }));
    let timer: NodeJS.Timeout | undefined;
    const answered = new Promise<DynsecResponse[]>((resolve, reject) => {
      this.waiting = (responses) => {
        // A late answer to an earlier, timed-out message is not this one's.
        if (responses[0]?.correlationData !== undefined && responses[0].correlationData !== `${tag}-0`) return;
        if (responses.length !== commands.length) {
          reject(new BrokerAdminError(`the plugin answered ${responses.length} of ${commands.length} commands`));
          return;
        }
        resolve(responses);
      };
      timer = setTimeout(() => reject(new BrokerAdminError(
        `no answer from the dynamic security plugin within ${this.timeoutMs} ms (is it loaded? mosquitto.conf \`plugin\`)`)), this.timeoutMs);
    });
    try {
      await this.client.publishAsync(CONTROL_TOPIC, JSON.stringify({ commands: tagged }), { qos: 1 }).catch((err: Error) => {
        throw new BrokerAdminError(`the broker refused the command (${err.message}): is this login the dynamic security admin?`);
      });
      return await answered;
    } finally {
      clearTimeout(timer);
      this.waiting = undefined;
    }
  }
}

function parseResponses(payload: Buffer): DynsecResponse[] | undefined {
  try {
    const parsed = JSON.parse(payload.toString('utf8')) as { responses?: unknown };
    if (!Array.isArray(parsed.responses)) return undefined;
    return parsed.responses.filter((r): r is DynsecResponse => typeof r === 'object' && r !== null && typeof (r as DynsecResponse).command === 'string');
  } catch {
    return undefined;
  }
}

/** A URL may carry user:password; an error message must not. */
function safeUrl(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.username = '';
    parsed.password = '';
    return parsed.toString();
  } catch {
    return '(an invalid URL)';
  }
}
