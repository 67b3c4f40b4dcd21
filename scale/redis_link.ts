/**
 * What the two Redis links (`broker.ts`, `gows_bridge.ts`) share: how a
 * connection to Redis is made and retried, how each connection's health is
 * judged (a PING every `broker.ping_interval`, one unanswered for
 * `broker.timeout` is a Redis that stalled), and how the link's state is
 * reported — each change logged once (not each failed retry), counted in
 * `relay_broker_up`, and told to the hub.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { createClient } from "@redis/client";
import type { EventEmitter } from "node:events";
import { durationMs } from "../config.ts";
import type { LinkHost } from "../core/link.ts";
import type { BrokerStats } from "../core/stats.ts";

/**
 * Options for `createClient`: fail commands at once while disconnected
 * rather than queueing them (a message for the others is counted as
 * dropped, not delivered minutes late), and reconnect forever, exponentially
 * with jitter from 100 ms to 5 s. `socketTimeoutMs`: reconnect when nothing
 * was read or written for that long.
 */
function redisClientOptions(url: string, socketTimeoutMs: number) {
  return {
    url,
    disableOfflineQueue: true,
    socket: {
      connectTimeout: 2000,
      socketTimeout: socketTimeoutMs,
      reconnectStrategy: (retries: number) =>
        Math.min(5000, 100 * 2 ** Math.min(retries, 6)) * (0.5 + Math.random() / 2),
    },
  };
}

/** A Redis client as the links use it. */
export type RedisClient = ReturnType<typeof createClient>;

/** Options for a {@link RedisPair}. */
export interface RedisPairOptions {
  /** `redis://` or `rediss://` URL. */
  url: string;
  /** A PING unanswered this long means Redis stalled; as written in the config, for logs. */
  timeout: string;
  /** A connection's health changed: why it is not usable, `""` when it is. */
  onChange: (why: string) => void;
  /** Whether the subscriber's subscription is in, so that a ready subscriber may be used. */
  subscribed: () => boolean;
}

/**
 * A link's two connections to Redis, one for commands and publishes and
 * one for its subscription, each judged by its PINGs on one clock (see
 * {@link WatchedConnection}). One silent for ten timeouts (PINGs go out
 * every interval while answered) is on a dead path: it is dropped and
 * reconnected rather than waited on.
 */
export class RedisPair {
  readonly publisher: RedisClient;
  readonly subscriber: RedisClient;
  /** The publisher's health. */
  readonly publishing: WatchedConnection;
  /** The subscriber's health. */
  readonly subscribing: WatchedConnection;
  /** `timeout` in ms. */
  readonly timeoutMs: number;
  readonly #timeout: string;
  #clock: ReturnType<typeof setInterval> | undefined;

  /** Both clients, not connected yet. */
  constructor(options: RedisPairOptions) {
    const { url, timeout, onChange, subscribed } = options;
    this.timeoutMs = durationMs(timeout);
    this.#timeout = timeout;
    const clientOptions = redisClientOptions(url, 10 * this.timeoutMs);
    this.publisher = createClient(clientOptions);
    this.subscriber = createClient(clientOptions);
    this.publishing = new WatchedConnection(this.publisher, onChange);
    this.subscribing = new WatchedConnection(this.subscriber, onChange, subscribed);
  }

  /** Both usable: messages can go to and come from the others. */
  get up(): boolean {
    return this.publishing.usable && this.subscribing.usable;
  }

  /**
   * Starts the health clock: every `intervalMs`, `before` (the link's own
   * checks, if any), then a PING for each connection or a judgement of the
   * one in flight.
   */
  watch(intervalMs: number, before?: (now: number) => void): void {
    this.#clock = setInterval(() => {
      const now = performance.now();
      before?.(now);
      this.publishing.check(now, this.timeoutMs, this.#timeout);
      this.subscribing.check(now, this.timeoutMs, this.#timeout);
    }, intervalMs);
    Deno.unrefTimer(this.#clock);
  }

  /** Stops the clock and disconnects both. */
  async close(): Promise<void> {
    clearInterval(this.#clock);
    await Promise.allSettled([this.publisher.close(), this.subscriber.close()]);
  }
}

/** A Redis link's up/down state as the operator and the hub see it. */
export class LinkStateReport {
  /** The state last reported, so each change is reported once. */
  #reported: "up" | "down" | undefined;

  constructor(
    private readonly options: {
      /** How log lines start: `broker`, `go-ws bridge`. */
      name: string;
      url: string;
      log: Logger;
      stats: BrokerStats;
      /** Said after "connected to {url}", with its properties (`, prefix {prefix}`). */
      connected?: { note: string; properties: Record<string, unknown> };
    },
  ) {}

  /** Logs, counts and tells `hub` of a change; repeats of the same state say nothing. */
  report(up: boolean, why: string, hub: LinkHost | undefined): void {
    const state = up ? "up" : "down";
    if (this.#reported === state) return;
    this.#reported = state;
    const { name, url, log, stats, connected } = this.options;
    stats.up = up ? 1 : 0;
    hub?.linkState(up);
    if (up) {
      log.info(`${name}: connected to {url}${connected?.note ?? ""}`, {
        url,
        ...connected?.properties,
      });
    } else {
      log.warning(`${name}: {url} unreachable ({error}); serving local clients, retrying`, {
        url,
        error: why,
      });
    }
  }
}

/** What {@link WatchedConnection} needs of a Redis client. */
export interface Pingable {
  ping(): Promise<unknown>;
}

/**
 * One Redis connection's health as its link judges it, not the client
 * library's idea of "connected": usable once it is ready (for a
 * subscriber, once its subscription is in) and its PING came back; not
 * answering once a PING waits longer than the timeout, so a Redis that
 * stops answering (SIGSTOP, `DEBUG SLEEP`, a dead path) is down within
 * `ping_interval + timeout`. A late answer counts: Redis is there again.
 * Each change calls `onChange` with why it is not usable (`""` when it is).
 */
export class WatchedConnection {
  /** Connected, and for a subscriber, subscribed. */
  #connected = false;
  /** The last PING came back (within the timeout, or late but since). */
  #answering = false;
  /** When the PING in flight went out, if one is. */
  #pingSentAt: number | undefined;

  /**
   * Follows `client`'s events; `subscribed` says whether a ready
   * connection may be used yet (a subscriber's subscription is in).
   */
  constructor(
    readonly client: Pingable,
    private readonly onChange: (why: string) => void,
    subscribed: () => boolean = () => true,
  ) {
    const events = client as unknown as EventEmitter;
    events.on("ready", () => {
      if (subscribed()) this.ready();
    });
    const down = (why: string) => {
      this.#connected = this.#answering = false;
      this.#pingSentAt = undefined;
      onChange(why);
    };
    events.on("end", () => down("connection closed"));
    events.on("error", (error: Error) => down(error.message || error.name));
  }

  /** Ready and answering: commands (or the subscription) work right now. */
  get usable(): boolean {
    return this.#connected && this.#answering;
  }

  /** The connection is ready (and subscribed): it counts once its first PING is answered. */
  ready(): void {
    this.#connected = true;
    this.#answering = false;
    this.#ping();
  }

  /** One tick of the health check: a PING if none is in flight, else a judgement of that one. */
  check(now: number, timeoutMs: number, timeout: string): void {
    if (!this.#connected) return;
    const sentAt = this.#pingSentAt;
    if (sentAt === undefined) this.#ping();
    else if (this.#answering && now - sentAt > timeoutMs) {
      this.#answering = false;
      this.onChange(`no answer within ${timeout}`);
    }
  }

  #ping(): void {
    const sentAt = this.#pingSentAt = performance.now();
    this.client.ping().then(
      () => {
        if (this.#pingSentAt !== sentAt) return;
        this.#pingSentAt = undefined;
        if (!this.#answering) {
          this.#answering = true;
          this.onChange("");
        }
      },
      () => {
        if (this.#pingSentAt === sentAt) this.#pingSentAt = undefined;
      },
    );
  }
}
