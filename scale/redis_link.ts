/**
 * What the two Redis links (`broker.ts`, `gows_bridge.ts`) share: how a
 * connection to Redis is made and retried, and how the link's state is
 * reported — each change logged once (not each failed retry), counted in
 * `relay_broker_up`, and told to the hub.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
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
