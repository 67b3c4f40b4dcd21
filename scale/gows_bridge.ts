/**
 * go-ws's Redis scale-out (`go/redis.go`, `RedisBridge`) spoken by the relay
 * (`broker.type: redis` with `websocket.protocol: go-ws`), so one Redis can
 * join Go hubs and relays in any mix. Loaded only then; the relay's own bus
 * (`broker.ts`) is not used.
 *
 * - A message this relay accepts (publish API, library, `GoWsHub`) goes to
 *   its own clients from the hub and, after the hub's batch, to Redis once,
 *   as go-ws's envelope `{"sourceId":"<this relay>","message":<Message>}` on
 *   `<prefix>:channel:<name>`, or `<prefix>:broadcast` for one to every
 *   client (`broker.go_ws_prefix`, default `ws` as go-ws's). The envelope
 *   wraps the frame the hub encoded, so the message is encoded once.
 * - It PSUBSCRIBEs `<prefix>:broadcast` and `<prefix>:channel:*` as go-ws
 *   does, skips envelopes with its own `sourceId` (its clients had those
 *   from the hub), and hands the rest to the hub once each: a channel's to
 *   the channel's subscribers with `channel` set from the Redis channel's
 *   name (go-ws's `PublishToChannel` leaves it out of the envelope), a
 *   broadcast to every client, and a timestamp stamped when it has none
 *   (go-ws's `stampServerMessageIfNeeded`). What a go-ws bridge drops is
 *   dropped here too: not JSON, an envelope or message Go cannot decode, an
 *   invalid `processId` or channel; and envelopes over
 *   `websocket.max_message_bytes` (go-ws's own cap is 64 KiB).
 * - While Redis is unreachable the relay serves its own clients; messages
 *   for the others are counted as dropped (`websocket_broker_dropped_total`)
 *   and the connection is retried with backoff, each change logged once, as
 *   with the relay's own broker. A stalled Redis is an unreachable one, as
 *   there: each connection gets a PING every `broker.ping_interval`, and one
 *   unanswered for `broker.timeout` marks the bridge down (`relay_broker_up`
 *   0, `/readyz` 503 with `broker.required`). go-ws keeps no history, and
 *   neither does the bridge: nothing is replayed after an outage.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Buffer } from "node:buffer";
import { LinkStateReport, RedisPair } from "./redis_link.ts";
import { type Config, durationMs } from "../config.ts";
import { utf8Length } from "../engine/frame.ts";
import {
  decodeGoWsMessage,
  encodeGoWsMessage,
  goWsChannelProblem,
  type GoWsMessage,
  goWsNow,
  isGoWsProcessId,
} from "../core/gows.ts";
import { Hub, type HubOptions, linkHost } from "../core/hub.ts";
import type { FrameMessage, HubLink, LinkHost, NumberedMessage } from "../core/link.ts";
import { BrokerStats } from "../core/stats.ts";

const log = getLogger(["relay", "gows"]);

/** Options for {@link GoWsBridge}. */
export interface GoWsBridgeOptions {
  /** `redis://` or `rediss://` URL. */
  url: string;
  /** go-ws's `RedisConfig.Prefix`: channels `<prefix>:broadcast` and `<prefix>:channel:<name>`. */
  prefix: string;
  /** Envelopes over this many bytes are dropped. */
  maxEnvelopeBytes: number;
  /** How often each connection gets a PING, in ms. */
  pingIntervalMs: number;
  /** A PING unanswered this long means Redis stalled; as written in the config, for logs. */
  timeout: string;
}

/** The hub's link to go-ws hubs and other relays through go-ws's Redis channels. */
export class GoWsBridge implements HubLink {
  /** This hub's id among linked hubs (unused on Redis, where {@link sourceId} names it). */
  readonly index: number = crypto.getRandomValues(new Uint32Array(1))[0];
  /** This relay's `sourceId` in envelopes; random per run, as go-ws's `core.ID()` is. */
  readonly sourceId: string = crypto.randomUUID();
  /** What the bridge counts; the hub reports it as its `stats.broker`. */
  readonly stats: BrokerStats = new BrokerStats();
  readonly #options: GoWsBridgeOptions;
  readonly #broadcast: string;
  readonly #channelPrefix: string;
  /** `{"sourceId":"…","message":`, the part of every envelope that never changes. */
  readonly #head: string;
  #hub: LinkHost | undefined;
  /** The publisher's connection and the pattern subscription's, each judged by its PINGs. */
  readonly #redis: RedisPair;
  #subscribed = false;
  readonly #state: LinkStateReport;
  #closed = false;

  constructor(options: GoWsBridgeOptions) {
    this.#options = options;
    this.#broadcast = `${options.prefix}:broadcast`;
    this.#channelPrefix = `${options.prefix}:channel:`;
    this.#head = `{"sourceId":${JSON.stringify(this.sourceId)},"message":`;
    this.#state = new LinkStateReport({
      name: "go-ws bridge",
      url: options.url,
      log,
      stats: this.stats,
      connected: { note: ", prefix {prefix}", properties: { prefix: options.prefix } },
    });
    this.#redis = new RedisPair({
      url: options.url,
      timeout: options.timeout,
      onChange: (why) => this.#update(why),
      // Ready once the pattern subscription is in (the client library restores it on reconnect).
      subscribed: () => this.#subscribed,
    });
  }

  /** Whether messages can go to and come from the others right now. */
  get up(): boolean {
    return this.#redis.up;
  }

  /** Joins `hub` to Redis; resolves at once, whether Redis is reachable or not. */
  start(hub: LinkHost): void {
    this.#hub = hub;
    this.#redis.watch(this.#options.pingIntervalMs);
    const failed = (error: Error) =>
      this.#closed || log.error("go-ws bridge: {error}", { error: error.message });
    const { publisher, subscriber } = this.#redis;
    publisher.connect().catch(failed);
    subscriber.connect()
      .then(() =>
        subscriber.pSubscribe(
          [this.#broadcast, `${this.#channelPrefix}*`],
          (message: Buffer, channel: Buffer) => this.#receive(message, channel.toString()),
          true,
        )
      )
      .then(() => {
        this.#subscribed = true;
        this.#redis.subscribing.ready();
      })
      .catch(failed);
  }

  /** Publishes each message the hub accepted: one envelope, one Redis channel. */
  forward(messages: (FrameMessage | NumberedMessage)[]): void {
    for (const { room, data } of messages) {
      // Only go-ws frames (text) make an envelope; a binary hub.broadcast stays local.
      if (!this.up || typeof data !== "string") {
        this.stats.dropped++;
        continue;
      }
      const channel = room === "" ? this.#broadcast : this.#channelPrefix + room;
      const started = performance.now();
      this.#redis.publisher.publish(channel, `${this.#head}${data}}`).then(
        () => {
          this.stats.published++;
          this.stats.observePublish((performance.now() - started) / 1000);
        },
        () => this.stats.dropped++,
      );
    }
  }

  /** go-ws channels are not numbered: every hub delivers as it receives. */
  sequencerFor(_channel: string): number | undefined {
    return undefined;
  }

  /** Never called: with no sequencer there is nothing to send to one. */
  sendTo(): void {}

  /** Disconnects from Redis. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#redis.close();
  }

  #receive(payload: Buffer, channel: string): void {
    const { refused } = this.stats;
    if (payload.length > this.#options.maxEnvelopeBytes) return void refused.too_large++;
    const envelope = payload.length === 0 ? undefined : decodeEnvelope(payload.toString());
    if (envelope === undefined) return void refused.malformed++;
    // Loop prevention: our own clients had it from the hub.
    if (envelope.sourceId === this.sourceId) return;
    const { message } = envelope;
    if (message.processId !== "" && !isGoWsProcessId(message.processId)) {
      return void refused.process_id++;
    }
    let room: string;
    if (channel === this.#broadcast) {
      room = "";
    } else if (channel.startsWith(this.#channelPrefix)) {
      room = channel.slice(this.#channelPrefix.length);
      if (goWsChannelProblem(room) !== undefined) return void refused.channel++;
      message.channel = room;
    } else {
      return void refused.channel++;
    }
    const frame = encodeGoWsMessage({ ...message, timestamp: message.timestamp ?? goWsNow() });
    this.stats.received++;
    this.#hub!.deliver([{ kind: "frame", room, data: frame, bytes: utf8Length(frame) }]);
  }

  /** Reports a change of state; down with a reason only (not ready yet is not news). */
  #update(why: string): void {
    const up = this.up;
    if (!this.#closed && (up || why !== "")) this.#state.report(up, why, this.#hub);
  }
}

/**
 * go-ws's `redisEnvelope` as Go decodes it: `sourceId` a string, `message` a
 * `Message` (see `decodeGoWsMessage`); `undefined` where Go fails.
 */
export function decodeEnvelope(
  text: string,
): { sourceId: string; message: GoWsMessage } | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  let sourceId = "";
  let message = decodeGoWsMessage(null)!;
  for (const [key, field] of Object.entries(value)) {
    const name = key.toLowerCase();
    if (field === null) continue;
    if (name === "sourceid") {
      if (typeof field !== "string") return undefined;
      sourceId = field;
    } else if (name === "message") {
      const decoded = decodeGoWsMessage(field);
      if (decoded === undefined) return undefined;
      message = decoded;
    }
  }
  return { sourceId, message };
}

/**
 * A hub joined to go-ws's Redis channels as `config` asks, and its bridge
 * (for `/readyz` and shutdown). History stays off: go-ws has none.
 */
export function startGoWsBridge(
  config: Config,
  options: HubOptions,
): { hub: Hub; broker: GoWsBridge } {
  const broker = new GoWsBridge({
    url: config.broker.url,
    prefix: config.broker.go_ws_prefix,
    maxEnvelopeBytes: config.websocket.max_message_bytes,
    pingIntervalMs: durationMs(config.broker.ping_interval),
    timeout: config.broker.timeout,
  });
  const hub = new Hub({ ...options, historySize: 0, link: broker });
  broker.start(linkHost(hub));
  return { hub, broker };
}
