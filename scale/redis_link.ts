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
import type { EventEmitter } from "node:events";
import type { LinkHost } from "../core/link.ts";
import type { BrokerStats } from "../core/stats.ts";

/**
 * Options for `createClient`: fail commands at once while disconnected
 * rather than queueing them (a message for the others is counted as
 * dropped, not delivered minutes late), and reconnect forever, exponentially
 * with jitter from 100 ms to 5 s. `socketTimeoutMs`: reconnect when nothing
 * was read or written for that long.
 */
export function redisClientOptions(
  url: string,
  socketTimeoutMs?: number,
): {
  url: string;
  disableOfflineQueue: boolean;
  socket: {
    connectTimeout: number;
    socketTimeout?: number;
    reconnectStrategy: (retries: number) => number;
  };
} {
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
