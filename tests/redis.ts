/**
 * Real `redis-server` processes for the broker tests, on free loopback
 * ports, without persistence; restartable on the same port to simulate an
 * outage. Also a pattern subscriber whose messages can be awaited, to see
 * what a relay publishes, and a wait for a relay's broker state.
 *
 * @module
 */
import { createClient } from "@redis/client";
import type { Relay } from "../server.ts";
import { bounded, commandWorks, freePort, within } from "./helpers.ts";

/** Whether `redis-server` can run here; the broker tests are skipped without it. */
export const REDIS_AVAILABLE: boolean = await commandWorks("redis-server", ["--version"]);
if (!REDIS_AVAILABLE) console.warn("redis-server not found: the broker tests are skipped");

/** A running `redis-server`. */
export class RedisServer implements AsyncDisposable {
  readonly port: number;
  readonly #child: Deno.ChildProcess;

  private constructor(port: number, child: Deno.ChildProcess) {
    this.port = port;
    this.#child = child;
  }

  /** `redis://127.0.0.1:<port>`. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts one on `port` (a free one by default) and resolves once it accepts connections. */
  static async start(port = freePort()): Promise<RedisServer> {
    const child = new Deno.Command("redis-server", {
      args: ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    while (!seen.includes("Ready to accept connections")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`redis-server did not start on ${port}:\n${seen}`);
      seen += value;
    }
    // Keep draining so the server never blocks on a full pipe.
    (async () => {
      while (!(await reader.read()).done);
    })();
    return new RedisServer(port, child);
  }

  /** Kills the server (as a crash would) and waits for it to be gone. */
  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await this.#child.status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Resolves once the relay's broker (or go-ws bridge) is `up` (or down), now or later. */
export function brokerState(relay: Relay, up: boolean): PromiseLike<void> {
  if ((relay.hub.stats.broker?.up === 1) === up) return Promise.resolve();
  return bounded(
    new Promise<void>((resolve) => {
      const listener = (event: Event) => {
        if ((event as CustomEvent<{ up: boolean }>).detail.up !== up) return;
        relay.hub.removeEventListener("broker", listener);
        resolve();
      };
      relay.hub.addEventListener("broker", listener);
    }),
    `the broker to be ${up ? "up" : "down"}`,
  );
}

/** One message a {@link RedisWatcher} saw. */
export interface Published {
  channel: string;
  message: string;
}

/** A `PSUBSCRIBE` on a Redis whose messages are awaited in order, plus a client to `PUBLISH` with. */
export class RedisWatcher implements AsyncDisposable {
  readonly #subscriber;
  readonly #publisher;
  readonly #seen: Published[] = [];
  #waiting: PromiseWithResolvers<Published> | undefined;

  private constructor(url: string) {
    this.#subscriber = createClient({ url });
    this.#publisher = createClient({ url });
  }

  /** Connects to `redis` and subscribes to `pattern`; resolves once the subscription is in. */
  static async start(redis: RedisServer, pattern: string): Promise<RedisWatcher> {
    const watcher = new RedisWatcher(redis.url);
    await Promise.all([watcher.#subscriber.connect(), watcher.#publisher.connect()]);
    await watcher.#subscriber.pSubscribe(pattern, (message: string, channel: string) => {
      const published = { channel, message };
      if (watcher.#waiting) {
        watcher.#waiting.resolve(published);
        watcher.#waiting = undefined;
      } else {
        watcher.#seen.push(published);
      }
    });
    return watcher;
  }

  /** The next message on a matching channel, in the order Redis delivered them. */
  next(): Promise<Published> {
    const seen = this.#seen.shift();
    if (seen !== undefined) return Promise.resolve(seen);
    this.#waiting = Promise.withResolvers();
    return within(this.#waiting.promise, "the next message on Redis").finally(() => {
      this.#waiting = undefined;
    });
  }

  /** `PUBLISH channel message`; resolves with how many subscribers Redis handed it to. */
  publish(channel: string, message: string): Promise<number> {
    return this.#publisher.publish(channel, message);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.allSettled([this.#subscriber.close(), this.#publisher.close()]);
  }
}
