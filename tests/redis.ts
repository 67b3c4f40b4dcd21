/**
 * Real `redis-server` processes for the broker tests and the fault suite, on
 * free loopback ports, without persistence: restartable on the same port
 * (an outage that loses every key), stoppable with SIGSTOP (a stall), and
 * driven with `redis-cli` (FLUSHALL, DEBUG SLEEP, CLIENT KILL). Also relays
 * joined to one, a wait for a relay's broker state, and a pattern subscriber
 * whose messages can be awaited, to see what a relay publishes.
 *
 * @module
 */
import { createClient } from "@redis/client";
import type { Relay } from "../relay.ts";
import type { HubEventMap } from "../core/hub_events.ts";
import {
  bounded,
  commandWorks,
  type ConfigPatch,
  freePort,
  startTestRelay,
  within,
} from "./helpers.ts";
import { ChildOutput } from "./child_output.ts";

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

  /**
   * Starts one on `port` (a free one by default) and resolves once it
   * accepts connections. A port picked here can be taken before Redis binds
   * it (by the ephemeral end of any connection), so without a `port` a few
   * are tried.
   */
  static async start(port?: number): Promise<RedisServer> {
    if (port !== undefined) return await RedisServer.#start(port);
    for (let attempt = 1;; attempt++) {
      try {
        return await RedisServer.#start(freePort());
      } catch (error) {
        if (attempt === 3) throw error;
      }
    }
  }

  static async #start(port: number): Promise<RedisServer> {
    const child = new Deno.Command("redis-server", {
      args: [
        ...["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        // DEBUG SLEEP, the stall the fault suite injects from the same host.
        ...["--enable-debug-command", "local"],
      ],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const stdout = new ChildOutput("redis-server", child.stdout);
    try {
      await stdout.waitFor(/Ready to accept connections/);
    } catch (error) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited (a port in use ends it at once).
      }
      await child.status;
      throw error;
    }
    // Keep draining so the server never blocks on a full pipe.
    stdout.drain();
    return new RedisServer(port, child);
  }

  /** Kills the server (as a crash would) and waits for it to be gone. */
  async stop(): Promise<void> {
    try {
      // A stopped process would hold SIGKILL until continued; continue it first.
      this.#child.kill("SIGCONT");
      this.#child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await this.#child.status;
  }

  /**
   * Stalls the server (SIGSTOP: connections stay open and nothing is
   * answered) until the returned handle is disposed, which continues it;
   * `await using` keeps a failing test from leaving it stopped.
   */
  pause(): AsyncDisposable {
    this.#child.kill("SIGSTOP");
    return {
      [Symbol.asyncDispose]: () => {
        try {
          this.#child.kill("SIGCONT");
        } catch {
          // Already gone.
        }
        return Promise.resolve();
      },
    };
  }

  /**
   * Runs one command with `redis-cli` and resolves with its answer, e.g.
   * `FLUSHALL`, `DEBUG SLEEP 5` (which answers after the sleep),
   * `CLIENT KILL TYPE pubsub`. Bounded: a server that never answers fails it.
   */
  async command(...args: string[]): Promise<string> {
    const child = new Deno.Command("redis-cli", {
      args: ["-h", "127.0.0.1", "-p", String(this.port), ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    try {
      const output = await within(child.output(), `redis-cli ${args.join(" ")}`);
      const text = new TextDecoder().decode(output.stdout).trim();
      if (!output.success || text.startsWith("ERR")) {
        throw new Error(`redis-cli ${args.join(" ")}: ${text}`);
      }
      return text;
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited.
      }
    }
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
      const listener = (event: HubEventMap["broker"]) => {
        if (event.detail.up !== up) return;
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

/**
 * Kills `redis` and starts an empty one on its port (a restart without
 * persistence); resolves with it once every relay saw Redis go and come back.
 */
export async function restartEmpty(redis: RedisServer, relays: Relay[]): Promise<RedisServer> {
  const down = Promise.all(relays.map((relay) => brokerState(relay, false)));
  await redis.stop();
  await down;
  const up = Promise.all(relays.map((relay) => brokerState(relay, true)));
  const fresh = await RedisServer.start(redis.port);
  await up;
  return fresh;
}

/** Relays on one Redis, each connected to it; shut down when disposed. */
export async function instances(
  redis: RedisServer,
  count: number,
  patch: ConfigPatch = {},
): Promise<{ relays: Relay[] } & AsyncDisposable> {
  const relays: Relay[] = [];
  for (let i = 0; i < count; i++) {
    relays.push(
      await startTestRelay({
        ...patch,
        broker: {
          type: "redis",
          url: redis.url,
          prefix: "test:",
          required: false,
          ...patch.broker,
        },
      }),
    );
  }
  await Promise.all(relays.map((relay) => brokerState(relay, true)));
  return {
    relays,
    async [Symbol.asyncDispose]() {
      await Promise.all(relays.map((relay) => relay.shutdown()));
    },
  };
}
