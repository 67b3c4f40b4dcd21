/**
 * Real `redis-server` processes for the broker tests and the fault suite, on
 * free loopback ports, without persistence: restartable on the same port
 * (an outage that loses every key), stoppable with SIGSTOP (a stall), and
 * driven with `redis-cli` (FLUSHALL, DEBUG SLEEP, CLIENT KILL).
 *
 * @module
 */
import type { Relay } from "../server.ts";
import { commandWorks, type ConfigPatch, freePort, startTestRelay } from "./helpers.ts";
import { bounded, within } from "./wait.ts";

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
      args: [
        ...["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        // DEBUG SLEEP, the stall the fault suite injects from the same host.
        ...["--enable-debug-command", "local"],
      ],
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

/** Resolves once the relay's broker is `up` (or down), now or later. */
export function brokerState(relay: Relay, up: boolean): PromiseLike<void> {
  if ((relay.hub.stats.broker?.up === 1) === up) return Promise.resolve();
  return bounded(brokerEvent(relay, up), `the broker to be ${up ? "up" : "down"}`);
}

function brokerEvent(relay: Relay, up: boolean): Promise<void> {
  return new Promise((resolve) => {
    const listener = (event: Event) => {
      if ((event as CustomEvent<{ up: boolean }>).detail.up !== up) return;
      relay.hub.removeEventListener("broker", listener);
      resolve();
    };
    relay.hub.addEventListener("broker", listener);
  });
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
