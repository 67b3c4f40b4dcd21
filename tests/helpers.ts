/**
 * Test helpers: relays on port 0, WebSocket clients whose messages and close
 * can be awaited, a metrics scraper, waits that resolve on events rather
 * than after fixed sleeps, and the environment a Kubernetes pod gets.
 *
 * @module
 */
import { type Config, DEFAULT_CONFIG } from "../config.ts";
import type { Hub } from "../hub.ts";
import { type Relay, startRelay } from "../server.ts";
import { RawWebSocket } from "./raw_ws.ts";
import { bounded, WAIT_MS, within } from "./wait.ts";

export { bounded, WAIT_MS, within };

/** A partial config, merged key by key over the test defaults. */
export type ConfigPatch = { [S in keyof Config]?: Partial<Config[S]> };

/** Defaults for tests: loopback, free ports, no idle pings unless asked for. */
export function testConfig(patch: ConfigPatch = {}): Config {
  const config = structuredClone(DEFAULT_CONFIG);
  config.server.host = "127.0.0.1";
  config.server.port = 0;
  config.metrics.host = "127.0.0.1";
  config.metrics.port = 0;
  config.websocket.idle_timeout = "0";
  for (const section of Object.keys(patch) as (keyof Config)[]) {
    Object.assign(config[section], patch[section]);
  }
  return config;
}

/** Starts a relay on loopback with `patch` applied to the test defaults. */
export function startTestRelay(patch: ConfigPatch = {}): Promise<Relay> {
  return startRelay(testConfig(patch));
}

/** A WebSocket client whose messages and close can be awaited in order. */
export class TestClient {
  readonly socket: WebSocket;
  readonly #closed: Promise<CloseEvent>;
  #messages: (string | ArrayBuffer)[] = [];
  #waiting: PromiseWithResolvers<string | ArrayBuffer> | undefined;
  #closeEvent: CloseEvent | undefined;

  private constructor(socket: WebSocket) {
    this.socket = socket;
    socket.binaryType = "arraybuffer";
    this.#closed = new Promise((resolve) =>
      socket.addEventListener("close", (event) => {
        this.#closeEvent = event;
        this.#waiting?.reject(new Error(`closed with code ${event.code} while waiting`));
        resolve(event);
      })
    );
    socket.addEventListener("message", (event) => {
      if (this.#waiting) {
        const { resolve } = this.#waiting;
        this.#waiting = undefined;
        resolve(event.data);
      } else {
        this.#messages.push(event.data);
      }
    });
  }

  /** Opens a client and resolves once it is registered with the relay's hub. */
  static async connect(relay: Relay, path = "/", protocols?: string[]): Promise<TestClient> {
    const registered = nextEvent(relay.hub, "connect");
    const client = await TestClient.open(new URL(path, relay.url).href, protocols);
    await registered;
    return client;
  }

  /** Opens a client without waiting for the hub (for rejected upgrades too). */
  static open(url: string, protocols?: string[]): Promise<TestClient> {
    return TestClient.wrap(new WebSocket(url, protocols));
  }

  /**
   * Takes a socket that is still connecting, from Deno or from another
   * implementation of the WebSocket API (npm `ws`), and resolves once it is open.
   */
  static wrap(socket: WebSocket): Promise<TestClient> {
    const client = new TestClient(socket);
    return within(
      new Promise((resolve, reject) => {
        socket.addEventListener("open", () => resolve(client), { once: true });
        socket.addEventListener("error", (e) => reject(new Error((e as ErrorEvent).message)), {
          once: true,
        });
      }),
      `opening ${socket.url}`,
      WAIT_MS,
    );
  }

  /**
   * The next message, in arrival order; rejects if the socket closes first or
   * nothing arrives within `ms`.
   */
  next(ms = WAIT_MS): Promise<string | ArrayBuffer> {
    const queued = this.#messages.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.#closeEvent) {
      return Promise.reject(new Error(`closed with code ${this.#closeEvent.code}`));
    }
    this.#waiting = Promise.withResolvers();
    return within(this.#waiting.promise, "the next message", ms).finally(() => {
      this.#waiting = undefined;
    });
  }

  /** The close event; fails the wait if the socket is still open {@link WAIT_MS} after this is awaited. */
  get closed(): PromiseLike<CloseEvent> {
    return bounded(this.#closed, "the socket to close");
  }

  /** Messages received and not yet taken with {@link next}. */
  get pending(): number {
    return this.#messages.length;
  }

  send(data: string | ArrayBuffer | Uint8Array): void {
    this.socket.send(data);
  }

  /** Closes cleanly and waits for the close to complete. */
  async close(): Promise<CloseEvent> {
    if (this.socket.readyState < WebSocket.CLOSING) this.socket.close(1000);
    return await this.closed;
  }
}

/** The next frame a `json` client receives, parsed. */
export async function nextJson(client: TestClient): Promise<Record<string, unknown>> {
  return JSON.parse(await client.next() as string);
}

/** Sends a `json` command (an object, or text as it is) and resolves with the next frame, parsed. */
export async function ask(client: TestClient, command: unknown): Promise<Record<string, unknown>> {
  client.send(typeof command === "string" ? command : JSON.stringify(command));
  return await nextJson(client);
}

/** Resolves with the next `type` event the hub dispatches (bounded like {@link bounded}). */
export function nextEvent(
  hub: Hub,
  type: "connect" | "disconnect" | "replayed",
): PromiseLike<CustomEvent> {
  return bounded(
    new Promise((resolve) =>
      hub.addEventListener(type, (event) => resolve(event as CustomEvent), { once: true })
    ),
    `the hub's next ${type} event`,
  );
}

/** Resolves once `count` `type` events have been dispatched from now on (bounded). */
export function events(
  hub: Hub,
  type: "connect" | "disconnect",
  count: number,
): PromiseLike<void> {
  return bounded(countEvents(hub, type, count), `${count} ${type} events`);
}

function countEvents(hub: Hub, type: "connect" | "disconnect", count: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const listener = () => {
      if (++seen === count) {
        hub.removeEventListener(type, listener);
        resolve();
      }
    };
    hub.addEventListener(type, listener);
  });
}

/** Samples from one scrape: `name{labels}` -> value. */
export type Samples = Map<string, number>;

/** Fetches `/metrics` and parses every sample line. */
export async function scrape(relay: Relay): Promise<Samples> {
  return parseSamples(await exposition(relay));
}

/** The text of `/metrics`. */
export async function exposition(relay: Relay): Promise<string> {
  const addr = relay.metricsAddr;
  if (!addr) throw new Error("metrics are disabled");
  return await (await fetch(`http://${addr.hostname}:${addr.port}/metrics`)).text();
}

/** Every sample line of an exposition. */
export function parseSamples(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

/** The `http://` base of the relay's WebSocket port, for plain requests. */
export function httpBase(relay: Relay): string {
  return relay.url.replace(/^ws/, "http");
}

/** A byte-level client on the relay's port, resolved once the hub has registered it. */
export async function connectRaw(relay: Relay): Promise<RawWebSocket> {
  const registered = nextEvent(relay.hub, "connect");
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.addr.port });
  const socket = await RawWebSocket.handshake(conn);
  await registered;
  return socket;
}

/**
 * Resolves once the kernel holds no TCP connection from the server's
 * `serverPort` to `peer` (as `ss -tn` lists them, in any state); throws
 * after `timeoutMs`.
 */
export async function untilTcpGone(
  serverPort: number,
  peer: Deno.NetAddr,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const filter = `( sport = :${serverPort} and dport = :${peer.port} )`;
  while (true) {
    const { stdout } = await new Deno.Command("ss", { args: ["-tanH", filter] }).output();
    const lines = new TextDecoder().decode(stdout).trim();
    if (lines === "") return;
    if (Date.now() > deadline) throw new Error(`still in ss after ${timeoutMs} ms:\n${lines}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Whether `name args` runs and succeeds here (for tests that need a tool). */
export async function commandWorks(
  name: string,
  args: string[],
  env?: Record<string, string>,
): Promise<boolean> {
  try {
    return (await new Deno.Command(name, { args, env, stdout: "null", stderr: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

/**
 * GOPATH mode on Debian's source tree, for the Go clients in `tests/interop/`:
 * gorilla/websocket without the module proxy.
 */
export const GO_ENV: Record<string, string> = {
  GO111MODULE: "off",
  GOPATH: "/usr/share/gocode",
  GOFLAGS: "",
};

/** A self-signed certificate for 127.0.0.1, made for this test run. */
export async function selfSigned(dir: string): Promise<{ cert: string; key: string }> {
  const cert = `${dir}/cert.pem`;
  const key = `${dir}/key.pem`;
  const { success, stderr } = await new Deno.Command("openssl", {
    args: [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
      ...["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
      ...[
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
      ],
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`openssl req failed: ${new TextDecoder().decode(stderr)}`);
  return { cert, key };
}

/** A TCP proxy on loopback whose connections can be cut, to drop a network path on demand. */
export class CuttableProxy implements AsyncDisposable {
  readonly port: number;
  readonly #listener: Deno.Listener;
  readonly #conns = new Set<Deno.Conn>();
  readonly #accepting: Promise<void>;

  constructor(targetPort: number) {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept(targetPort);
  }

  /** Connections open through the proxy right now. */
  get connections(): number {
    return this.#conns.size / 2;
  }

  /** Closes every connection through the proxy at once, as a network drop would. */
  cut(): void {
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch {
        // Already closed by the other direction.
      }
    }
    this.#conns.clear();
  }

  async #accept(targetPort: number): Promise<void> {
    for await (const inbound of this.#listener) {
      const outbound = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
      this.#conns.add(inbound).add(outbound);
      const pipe = async (from: Deno.Conn, to: Deno.Conn) => {
        await from.readable.pipeTo(to.writable).catch(() => {});
        this.#conns.delete(from);
      };
      pipe(inbound, outbound);
      pipe(outbound, inbound);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    this.cut();
    await this.#accepting.catch(() => {});
  }
}

/** A loopback port nothing listens on right now. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** What Kubernetes injects into every pod for a Service named `relay` with one TCP port. */
export const KUBERNETES_SERVICE_LINKS: Readonly<Record<string, string>> = {
  RELAY_PORT: "tcp://10.0.0.1:8443",
  RELAY_SERVICE_HOST: "10.0.0.1",
  RELAY_SERVICE_PORT: "8443",
  RELAY_PORT_8443_TCP: "tcp://10.0.0.1:8443",
  RELAY_PORT_8443_TCP_ADDR: "10.0.0.1",
  RELAY_PORT_8443_TCP_PORT: "8443",
  RELAY_PORT_8443_TCP_PROTO: "tcp",
};
