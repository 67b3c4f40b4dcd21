/**
 * Several relay processes sharing traffic through Redis (`broker.type:
 * redis`): the hub's link to every other instance. Loaded only when a
 * broker is configured.
 *
 * - `raw` frames are delivered to local clients at once by the hub; after
 *   each batch they go to Redis in one `PUBLISH` on one bus channel
 *   (`<prefix>bus:2`), tagged with this instance's id, and every other
 *   instance delivers them to its clients. One bus for everything, rather
 *   than a Redis channel per room: one subscription, and one `PUBLISH` per
 *   batch whatever the number of rooms it touches.
 * - `json` publishes are numbered by Redis: one Lua script per message
 *   increments the channel's `seq`, appends the frame to the channel's
 *   history (a Redis Stream, `MAXLEN ~ history_size`, expiring after
 *   `history_ttl` idle) and publishes it on the bus; every instance, this
 *   one included, delivers it from there, so a channel has one order
 *   everywhere. A subscribe reads the channel's `seq`, `epoch` and missed
 *   entries from Redis, so a client recovers on any instance.
 * - The channel's `epoch` lives in Redis beside its `seq`, in one hash, and
 *   is made by the same scripts that number: a hash without an epoch (a new
 *   channel, or a Redis that lost its data) gets a new one with `seq` 0 and
 *   an empty stream, so a numbering that restarts always has a new name.
 * - A stalled Redis is a down Redis: every `broker.ping_interval` each
 *   connection is sent a PING, and one unanswered for `broker.timeout`
 *   marks the broker down, so it is down within `ping_interval + timeout`
 *   of the stall, however it stalls (SIGSTOP, `DEBUG SLEEP`, a dead path).
 *   A call anyone waits on (a subscribe's recovery) fails then too; a
 *   publish already sent completes when Redis answers, or never. A
 *   connection silent for ten timeouts is dropped and reconnected, so a
 *   path that died without a FIN or RST does not keep it down for the
 *   kernel's retransmission timeout. Redis keeps numbering while the
 *   commands connection answers and the bus subscription has been lost for
 *   less than `timeout`: a subscription killed for a moment costs local
 *   clients a short delay; once it is back the hub catches up from each
 *   channel's stream what went by meanwhile (`LinkHost.catchUp`).
 * - While Redis is unreachable the relay keeps serving its own clients:
 *   raw frames are delivered locally and counted as dropped for the
 *   others (`websocket_broker_dropped_total`, which also counts, at each
 *   receiver, what it missed of another instance's bus traffic: every
 *   message on the bus carries its place in its sender's count); `json` channels are numbered by the hub under a local epoch of
 *   their own (so its clients resync, never mistaking them for Redis's
 *   numbers), and are not written to Redis afterwards: other instances may
 *   have numbered the same channel meanwhile, so no one order can vouch for
 *   them. Once Redis is back, each channel this instance numbered locally,
 *   or whose publish may or may not have reached Redis, gets a new epoch in
 *   Redis before this instance publishes to it again, so clients of every
 *   instance learn that the old numbering missed something. Subscribes
 *   answer `recovered: false` meanwhile. The client library reconnects with
 *   backoff and resubscribes by itself.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { Buffer } from "node:buffer";
import { LinkStateReport, RedisPair } from "./redis_link.ts";
import { type Config, durationMs } from "../config.ts";
import type {
  FrameMessage,
  HubLink,
  LinkHost,
  NumberedMessage,
  PublishRequest,
  Recovery,
} from "../core/link.ts";
import { replayComplete } from "../core/history.ts";
import { BrokerStats } from "../core/stats.ts";

const log = getLogger(["relay", "broker"]);

/**
 * The start of every script: `epoch_of(nonce, keep)` returns the channel's
 * epoch (KEYS[1] is its hash of `seq` and `epoch`, KEYS[2] its stream),
 * making a new numbering first when the hash has none. A new epoch is
 * Redis's clock to the microsecond and the asking instance's id, so it
 * differs from every earlier one, even after a restart that lost the data
 * that named them. Every call keeps the hash for `keep` ms more
 * ({@link NUMBERING_KEEP_MS}): a channel nobody publishes to or subscribes
 * to for that long is forgotten, and the next use starts a new epoch,
 * rather than every channel name ever used staying in Redis for good.
 */
const EPOCH_LUA = `
local function epoch_of(nonce, keep)
  local epoch = redis.call('HGET', KEYS[1], 'epoch')
  if not epoch then
    local now = redis.call('TIME')
    epoch = string.format('%x%05x', now[1], now[2]) .. '-' .. nonce
    redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
    redis.call('DEL', KEYS[2])
  end
  redis.call('PEXPIRE', KEYS[1], keep)
  return epoch
end
`;

/**
 * How long a channel's numbering outlives its last publish or subscribe in
 * Redis, at least: a day, or `history_ttl` if that is longer (the stream
 * never outlives the numbering it belongs to).
 */
export const NUMBERING_KEEP_MS = 86_400_000;

/** Numbers a `json` publish, keeps it in the stream, and puts it on the bus. */
const PUBLISH_SCRIPT = EPOCH_LUA + `
local epoch = epoch_of(ARGV[3], ARGV[10])
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local frame = '{"type":"message","channel":' .. cjson.encode(ARGV[1]) .. ',"data":' .. ARGV[2] ..
  ',"seq":' .. seq .. ',"epoch":' .. cjson.encode(epoch) .. ',"timestamp":' .. ms .. '}'
if tonumber(ARGV[4]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], seq .. '-0', 't', ms, 'f', frame)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('PUBLISH', ARGV[6], 'J' .. ARGV[7] .. '\\n' .. ARGV[9] .. '\\n' .. ARGV[8] .. '\\n' ..
  ARGV[1] .. '\\n' .. seq .. '\\n' .. epoch .. '\\n' .. ms .. '\\n' .. frame)
return seq
`;

/** A channel's seq, epoch, and the stream entries after `since` (ARGV[1], "" for none). */
const RECOVER_SCRIPT = EPOCH_LUA + `
local epoch = epoch_of(ARGV[2], ARGV[3])
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local entries = {}
if ARGV[1] ~= '' then
  entries = redis.call('XRANGE', KEYS[2], (tonumber(ARGV[1]) + 1) .. '-0', '+')
end
return {seq, epoch, entries}
`;

/**
 * Ends a channel's numbering and starts a new one (ARGV[1] is the nonce),
 * for a channel whose order this instance can no longer vouch for, and says
 * so on the bus (ARGV[2]), so every instance tells its subscribers now,
 * not at the channel's next message (a quiet channel might have none).
 */
const ROTATE_SCRIPT = EPOCH_LUA + `
redis.call('HDEL', KEYS[1], 'epoch')
local epoch = epoch_of(ARGV[1], ARGV[4])
redis.call('PUBLISH', ARGV[2], 'N' .. ARGV[3] .. '\\n' .. epoch)
return epoch
`;

/** Options for {@link RedisBroker}. */
export interface BrokerOptions {
  config: Config["broker"];
  /** Entries kept per channel stream; 0 keeps none. */
  historySize: number;
  historyTtlMs: number;
}

/** The link between this relay's hub and the others, through Redis. */
export class RedisBroker implements HubLink {
  /** This instance's id on the bus: random, so restarts and other hosts never collide. */
  readonly index: number = crypto.getRandomValues(new Uint32Array(1))[0];
  /** What the broker counts; the hub reports it as its `stats.broker`. */
  readonly stats: BrokerStats = new BrokerStats();
  readonly #options: BrokerOptions;
  readonly #bus: string;
  /**
   * Raw frames and `json` messages this instance handed to Redis for the
   * bus, so far: each carries its place in this count, and a receiver that
   * sees a jump knows how many it missed.
   */
  #sent = 0;
  /** Per other instance, the place in its count that comes next. */
  readonly #expected = new Map<number, number>();
  /** This instance's part of the epochs it makes in Redis. */
  readonly #nonce: string;
  /** How long each use keeps a channel's numbering in Redis, in ms, as the scripts take it. */
  readonly #keep: string;
  /** Commands and the bus subscription, each judged by its PINGs. */
  readonly #redis: RedisPair;
  /** The commands connection and the bus subscription's, each judged by its PINGs. */
  /** Rejects each call in flight that someone waits on, when the broker goes down. */
  readonly #waiting = new Set<(error: Error) => void>();
  #hub: LinkHost | undefined;
  /** Whether the bus subscription was ever made (the client library keeps it after that). */
  #subscribed = false;
  /** Both connections usable: `relay_broker_up`, `/readyz`. Set only through {@link #update}. */
  #up = false;
  /**
   * Whether Redis numbers `json` publishes (else the hub does, locally):
   * while the publisher connection is usable and the subscription is too,
   * or has been lost for less than `timeout`. A subscription that drops
   * for a moment (`CLIENT KILL TYPE pubsub`) delays local clients and
   * leaves a seq gap they fill from the stream; numbering locally instead
   * would fork the channel and resync every client of every instance.
   */
  #sequencing = false;
  /** Whether the bus went by unheard since the hub last caught up. */
  #missedBus = false;
  /** Since when the subscription has not been usable (from the start, until it first is). */
  #subscriptionLostAt: number | undefined = performance.now();
  /**
   * Channels whose Redis numbering this instance cannot vouch for: it
   * numbered them locally during an outage, or a publish to them failed
   * with no telling whether Redis numbered it. Each gets a new epoch before
   * this instance publishes to it again.
   */
  readonly #forked = new Set<string>();
  readonly #state: LinkStateReport;
  #closed = false;

  constructor(options: BrokerOptions) {
    this.#options = options;
    // Versioned: instances of another bus format share nothing rather than misread each other.
    this.#bus = `${options.config.prefix}bus:2`;
    this.#nonce = this.index.toString(16);
    this.#keep = String(Math.max(NUMBERING_KEEP_MS, options.historyTtlMs));
    this.#state = new LinkStateReport({
      name: "broker",
      url: options.config.url,
      log,
      stats: this.stats,
    });
    this.#redis = new RedisPair({
      url: options.config.url,
      timeout: options.config.timeout,
      onChange: (why) => this.#update(why),
      // The subscriber is ready once the bus subscription is in: on the first
      // connection when subscribe() resolves; on reconnects the client library
      // restores it before it reports ready.
      subscribed: () => this.#subscribed,
    });
  }

  /** Whether messages can go to and come from the other instances right now. */
  get up(): boolean {
    return this.#up;
  }

  /**
   * Joins `hub` to the bus and starts connecting; resolves at once, whether
   * Redis is reachable or not (see the module doc for what happens then).
   */
  start(hub: LinkHost): void {
    this.#hub = hub;
    this.#redis.watch(
      durationMs(this.#options.config.ping_interval),
      (now) => this.#checkSubscription(now),
    );
    const failed = (error: Error) =>
      this.#closed || log.error("broker: {error}", { error: error.message });
    const { publisher, subscriber } = this.#redis;
    publisher.connect().catch(failed);
    subscriber.connect()
      .then(() =>
        subscriber.subscribe(this.#bus, (message: Buffer) => this.#receive(message), true)
      )
      .then(() => {
        this.#subscribed = true;
        this.#redis.subscribing.ready();
      })
      .catch(failed);
  }

  forward(messages: (FrameMessage | NumberedMessage)[]): void {
    const raw: FrameMessage[] = [];
    for (const message of messages) {
      if (message.kind === "frame") {
        raw.push(message);
      } else {
        // Numbered here, under a local epoch: only while Redis is away.
        this.stats.dropped++;
        this.#forked.add(message.room);
      }
    }
    if (raw.length === 0) return;
    if (!this.#publishing) {
      this.stats.dropped += raw.length;
      return;
    }
    const started = performance.now();
    const first = this.#sent;
    this.#sent += raw.length;
    // A batch that fails may or may not be on the bus: the receivers that missed it count it.
    this.#redis.publisher.publish(this.#bus, encodeBatch(this.index, first, raw)).then(
      () => {
        this.stats.published += raw.length;
        this.stats.observePublish((performance.now() - started) / 1000);
      },
      () => {},
    );
  }

  /** Redis numbers every channel while it is reachable; otherwise the hub does. */
  sequencerFor(_channel: string): number | undefined {
    return this.#sequencing ? 0 : undefined;
  }

  sendTo(_target: number, messages: PublishRequest[]): void {
    const { historySize, historyTtlMs } = this.#options;
    for (const message of messages) {
      // Forked while up (a publish failed without a drop of the connection).
      if (this.#forked.size > 0 && this.#forked.delete(message.room)) this.#rotate(message.room);
      const started = performance.now();
      this.#redis.publisher.eval(PUBLISH_SCRIPT, {
        keys: [this.#key("seq", message.room), this.#key("history", message.room)],
        arguments: [
          message.room,
          message.data,
          this.#nonce,
          String(historySize),
          String(historyTtlMs),
          this.#bus,
          String(this.index),
          message.sender ?? "",
          String(this.#sent++),
          this.#keep,
        ],
      }).then(
        () => {
          this.stats.published++;
          this.stats.observePublish((performance.now() - started) / 1000);
        },
        // Maybe numbered, maybe not: numbering it here too could deliver it twice, so the
        // channel's numbering is what changes (and a receiver that missed it counts it).
        () => this.#forked.add(message.room),
      );
    }
  }

  async recover(channel: string, since: number | undefined): Promise<Recovery> {
    if (!this.#sequencing) throw new Error("broker unreachable");
    const [seq, epoch, rows] = await this.#bounded(this.#redis.publisher.eval(RECOVER_SCRIPT, {
      keys: [this.#key("seq", channel), this.#key("history", channel)],
      arguments: [since === undefined ? "" : String(since), this.#nonce, this.#keep],
    })) as [number, string, [string, string[]][]];
    const oldest = Date.now() - this.#options.historyTtlMs;
    const entries = rows.map(([id, fields]) => ({
      seq: parseInt(id),
      time: Number(fields[fields.indexOf("t") + 1]),
      frame: fields[fields.indexOf("f") + 1],
    })).filter((entry) => entry.time >= oldest);
    const complete = since !== undefined && replayComplete(since, seq, entries);
    return { seq, epoch, entries, complete };
  }

  /** Disconnects from Redis. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#redis.close();
  }

  #key(kind: "seq" | "history", channel: string): string {
    return `${this.#options.config.prefix}${kind}:${channel}`;
  }

  /**
   * `call`, failing too when the broker goes down first: whoever waits on
   * it waits no longer than the health check takes to see a stall.
   */
  #bounded<T>(call: Promise<T>): Promise<T> {
    return new Promise((resolve, reject) => {
      this.#waiting.add(reject);
      call.then(resolve, reject).finally(() => this.#waiting.delete(reject));
    });
  }

  /** Whether the publisher connection is usable: raw frames and scripts can go out. */
  get #publishing(): boolean {
    return this.#redis.publishing.usable;
  }

  /**
   * Part of the health check, every `ping_interval`: a bus subscription
   * lost for longer than `timeout` ends Redis's numbering.
   */
  #checkSubscription(now: number): void {
    const lost = this.#subscriptionLostAt;
    if (this.#sequencing && lost !== undefined && now - lost > this.#redis.timeoutMs) {
      this.#update(`bus subscription lost for over ${this.#options.config.timeout}`);
    }
  }

  /**
   * Recomputes whether the broker is up; `why` says what went wrong when it
   * is not. On the way up, the forked channels get new epochs first: their
   * scripts are queued on the publisher's connection before anything the
   * hub publishes afterwards, so no publish can land in an old numbering.
   */
  #update(why: string): void {
    const subscribed = this.#redis.subscribing.usable;
    const now = performance.now();
    if (subscribed) this.#subscriptionLostAt = undefined;
    else {
      this.#subscriptionLostAt ??= now;
      this.#missedBus = true;
    }
    const lost = this.#subscriptionLostAt;
    const sequencing = this.#publishing &&
      (lost === undefined || now - lost <= this.#redis.timeoutMs);
    if (sequencing !== this.#sequencing) {
      if (sequencing) this.#rotateForked();
      this.#sequencing = sequencing;
      if (!sequencing) {
        const error = new Error(`broker down: ${why}`);
        for (const reject of this.#waiting) reject(error);
        this.#waiting.clear();
      }
    }
    const up = this.#publishing && subscribed;
    this.#up = up;
    if (up && this.#missedBus) {
      // Back on the bus: fetch what went by meanwhile rather than wait for a gap to show.
      this.#missedBus = false;
      this.#hub?.catchUp();
    }
    // Down is reported with a reason: a connection that is merely not ready yet is not news.
    if (!this.#closed && (up || why !== "")) this.#state.report(up, why, this.#hub);
  }

  /** New epochs in Redis for the channels in {@link #forked}. */
  #rotateForked(): void {
    const forked = [...this.#forked];
    this.#forked.clear();
    for (const channel of forked) this.#rotate(channel);
  }

  /** A new epoch in Redis for `channel`; forked again if that fails. */
  #rotate(channel: string): void {
    this.#redis.publisher.eval(ROTATE_SCRIPT, {
      keys: [this.#key("seq", channel), this.#key("history", channel)],
      arguments: [this.#nonce, this.#bus, channel, this.#keep],
    }).catch(() => this.#forked.add(channel));
  }

  #receive(message: Buffer): void {
    const hub = this.#hub!;
    if (message[0] === RENUMBERED_TAG) {
      const text = message.toString("utf8", 1);
      const at = text.indexOf("\n");
      hub.renumbered(text.slice(0, at), text.slice(at + 1), 0);
      return;
    }
    if (message[0] === JSON_TAG) {
      const text = message.toString("utf8", 1);
      const parts = text.split("\n", 7);
      const [origin, place, sender, room, seq, epoch, time] = parts;
      const frame = text.slice(parts.join("\n").length + 1);
      this.#arrived(Number(origin), Number(place), 1);
      if (Number(origin) !== this.index) this.stats.received++;
      hub.deliver([{
        kind: "numbered",
        room,
        data: frame,
        bytes: Buffer.byteLength(frame),
        seq: Number(seq),
        epoch,
        time: Number(time),
        origin: Number(origin),
        sender: sender === "" ? undefined : sender,
      }]);
      return;
    }
    const batch = decodeBatch(message);
    this.#arrived(batch.origin, batch.first, batch.messages.length);
    // Our own raw frames were delivered here before they were published.
    if (batch.origin === this.index) return;
    this.stats.received += batch.messages.length;
    hub.deliver(batch.messages);
  }

  /**
   * Counts what this instance missed of `origin`'s bus traffic (its
   * subscription was down, or the publish never reached the bus): the jump
   * from the place expected to `first`. Its own traffic is not counted:
   * its clients had its raw frames first, and recover its `json` messages.
   */
  #arrived(origin: number, first: number, count: number): void {
    if (origin === this.index) return;
    const expected = this.#expected.get(origin);
    if (expected !== undefined && first > expected) this.stats.dropped += first - expected;
    if (expected === undefined || first + count > expected) {
      this.#expected.set(origin, first + count);
    }
  }
}

const RAW_TAG = 0x52; // "R"
const JSON_TAG = 0x4a; // "J"
const RENUMBERED_TAG = 0x4e; // "N"
const HEAD_BYTES = 15;

/**
 * A batch of raw frames as one bus message: tag, origin, the first frame's
 * place in the origin's count (6 bytes), count, then per frame its kind (0
 * text, 1 binary), room and payload, lengths first.
 */
export function encodeBatch(origin: number, first: number, messages: FrameMessage[]): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(HEAD_BYTES);
  head[0] = RAW_TAG;
  head.writeUInt32BE(origin, 1);
  head.writeUIntBE(first, 5, 6);
  head.writeUInt32BE(messages.length, 11);
  parts.push(head);
  for (const { room, data } of messages) {
    const roomBytes = Buffer.from(room, "utf8");
    const payload = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data);
    const meta = Buffer.alloc(9);
    meta[0] = typeof data === "string" ? 0 : 1;
    meta.writeUInt32BE(roomBytes.length, 1);
    meta.writeUInt32BE(payload.length, 5);
    parts.push(meta, roomBytes, payload);
  }
  return Buffer.concat(parts);
}

/** The inverse of {@link encodeBatch}; binary payloads come back as their own `ArrayBuffer`s. */
export function decodeBatch(
  buffer: Buffer,
): { origin: number; first: number; messages: FrameMessage[] } {
  const origin = buffer.readUInt32BE(1);
  const first = buffer.readUIntBE(5, 6);
  const count = buffer.readUInt32BE(11);
  const messages: FrameMessage[] = [];
  let at = HEAD_BYTES;
  for (let i = 0; i < count; i++) {
    const binary = buffer[at] === 1;
    const roomLength = buffer.readUInt32BE(at + 1);
    const payloadLength = buffer.readUInt32BE(at + 5);
    at += 9;
    const room = buffer.toString("utf8", at, at + roomLength);
    at += roomLength;
    const start = buffer.byteOffset + at;
    const data = binary
      ? buffer.buffer.slice(start, start + payloadLength) as ArrayBuffer
      : buffer.toString("utf8", at, at + payloadLength);
    at += payloadLength;
    messages.push({ kind: "frame", room, data, bytes: payloadLength });
  }
  return { origin, first, messages };
}
