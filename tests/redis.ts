/**
 * Real `redis-server` processes for the broker tests, on free loopback
 * ports, without persistence; restartable on the same port to simulate an
 * outage.
 *
 * @module
 */
import { commandWorks, freePort } from "./helpers.ts";

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
