/**
 * Test helpers: relays on port 0, WebSocket clients whose messages and close
 * can be awaited, a metrics scraper, waits that resolve on events rather
 * than after fixed sleeps, and the environment a Kubernetes pod gets.
 *
 * @module
 */
import net from "node:net";
import { type Config, DEFAULT_CONFIG } from "../config.ts";
import type { Hub } from "../core/hub.ts";
import type { HubEventMap } from "../core/hub_events.ts";
import { type Relay, startRelay } from "../relay.ts";
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

/** A `json` frame from the relay, with the fields the envelopes share typed. */
export interface Envelope {
  type: string;
  channel?: string;
  seq?: number;
  epoch?: string;
  recovered?: boolean;
  data?: unknown;
  [field: string]: unknown;
}

/** The next frame a `json` client receives, parsed. */
export async function nextJson(client: TestClient): Promise<Envelope> {
  return JSON.parse(await client.next() as string);
}

/** Sends a `json` command (an object, or text as it is) and resolves with the next frame, parsed. */
export async function ask(client: TestClient, command: unknown): Promise<Envelope> {
  client.send(typeof command === "string" ? command : JSON.stringify(command));
  return await nextJson(client);
}

/**
 * A new `json` client subscribed to `channel` (from `since` under `epoch` when
 * given), with the `subscribed` reply; fails unless that is the answer.
 */
export async function subscribe(
  relay: Relay,
  channel: string,
  since?: number,
  epoch?: string,
): Promise<{ client: TestClient; reply: Subscribed }> {
  const client = await TestClient.connect(relay);
  const reply = await ask(client, { type: "subscribe", channel, since, epoch });
  if (reply.type !== "subscribed") {
    throw new Error(`subscribe to ${channel}: answered ${JSON.stringify(reply)}`);
  }
  return { client, reply: reply as Subscribed };
}

/** A `subscribed` reply, as {@link subscribe} returns it. */
export interface Subscribed extends Envelope {
  type: "subscribed";
  channel: string;
  seq: number;
  epoch: string;
}

/** A WebSocket open to `url` (bounded), or a failure naming it. */
export async function openWebSocket(url: string): Promise<WebSocket> {
  const socket = new WebSocket(url);
  await within(
    new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new Error(`cannot connect to ${url}`));
    }),
    `connecting to ${url}`,
  );
  return socket;
}

/** Resolves with the next `type` event the hub dispatches (bounded like {@link bounded}). */
export function nextEvent<K extends keyof HubEventMap>(
  hub: Hub,
  type: K,
): PromiseLike<HubEventMap[K]> {
  return bounded(
    new Promise<HubEventMap[K]>((resolve) => hub.addEventListener(type, resolve, { once: true })),
    `the hub's next ${type} event`,
  );
}

/** Resolves once `count` `type` events have been dispatched from now on (bounded). */
export function events(
  hub: Hub,
  type: keyof HubEventMap,
  count: number,
): PromiseLike<void> {
  return bounded(countEvents(hub, type, count), `${count} ${type} events`);
}

function countEvents(hub: Hub, type: keyof HubEventMap, count: number): Promise<void> {
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

/** One connection through a {@link CuttableProxy}: the client's side and the target's. */
interface ProxiedPair {
  readonly inbound: net.Socket;
  outbound: net.Socket | undefined;
  /** Blackholed: nothing is forwarded any more, not even a close. */
  dead: boolean;
}

/**
 * A TCP proxy on loopback whose network path can be broken on demand, the
 * ways a real one breaks: {@link cut} (FIN), {@link reset} (RST),
 * {@link blackhole} (nothing arrives, nothing closes), {@link refuse} (new
 * connections closed at once). Connections go to the first of
 * {@link targets} that accepts, so clients of a relay that went away move to
 * the next one, as behind a load balancer.
 */
export class CuttableProxy implements AsyncDisposable {
  readonly port: number;
  /** Ports connections are forwarded to, tried in order. */
  targets: number[];
  readonly #server: net.Server;
  readonly #pairs = new Set<ProxiedPair>();
  #mode: "forward" | "refuse" | "blackhole" = "forward";

  private constructor(server: net.Server, targets: number[]) {
    this.#server = server;
    this.port = (server.address() as net.AddressInfo).port;
    this.targets = targets;
    server.on("connection", (socket: net.Socket) => this.#accept(socket));
  }

  /** Listens on a free loopback port, forwarding to `targets` (one port or several). */
  static async start(targets: number | number[]): Promise<CuttableProxy> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", resolve);
    });
    return new CuttableProxy(server, [targets].flat());
  }

  /** Connections open through the proxy right now. */
  get connections(): number {
    return this.#pairs.size;
  }

  /** Closes every connection through the proxy at once (FIN both ways), as a network drop would. */
  cut(): void {
    for (const { inbound, outbound } of this.#pairs) {
      inbound.destroy();
      outbound?.destroy();
    }
  }

  /** Resets every connection through the proxy (RST both ways). */
  reset(): void {
    for (const { inbound, outbound } of this.#pairs) {
      inbound.resetAndDestroy();
      outbound?.resetAndDestroy();
    }
  }

  /**
   * Stops forwarding anything, on every connection and on new ones, without
   * closing any: what a dead network path looks like to both ends (bytes
   * written are taken and never delivered; no FIN, no RST).
   */
  blackhole(): void {
    this.#mode = "blackhole";
    for (const pair of this.#pairs) this.#kill(pair);
  }

  /** Closes new connections at once, as a host that is down would (existing ones stay). */
  refuse(): void {
    this.#mode = "refuse";
  }

  /** Forwards new connections again (blackholed ones stay dead). */
  forward(): void {
    this.#mode = "forward";
  }

  #accept(inbound: net.Socket): void {
    if (this.#mode === "refuse") return void inbound.destroy();
    const pair: ProxiedPair = { inbound, outbound: undefined, dead: false };
    this.#pairs.add(pair);
    inbound.on("error", () => {});
    inbound.on("close", () => {
      if (!pair.dead) pair.outbound?.destroy();
      if (pair.outbound === undefined || pair.outbound.destroyed) this.#pairs.delete(pair);
    });
    if (this.#mode === "blackhole") return this.#kill(pair);
    this.#connect(pair, 0);
  }

  /** Connects `pair` to the first target from `index` on that accepts. */
  #connect(pair: ProxiedPair, index: number): void {
    const { inbound } = pair;
    const outbound = net.connect(this.targets[index], "127.0.0.1");
    outbound.once("error", () => {
      if (pair.outbound !== undefined || pair.dead) return;
      if (index + 1 < this.targets.length) this.#connect(pair, index + 1);
      else inbound.destroy();
    });
    outbound.once("connect", () => {
      pair.outbound = outbound;
      outbound.on("error", () => {});
      outbound.on("close", () => {
        if (!pair.dead) inbound.destroy();
        if (inbound.destroyed) this.#pairs.delete(pair);
      });
      if (inbound.destroyed) return void outbound.destroy();
      if (pair.dead) return this.#kill(pair);
      inbound.pipe(outbound);
      outbound.pipe(inbound);
    });
  }

  /** Blackholes one connection: reads and drops whatever either side writes. */
  #kill(pair: ProxiedPair): void {
    pair.dead = true;
    const { inbound, outbound } = pair;
    inbound.unpipe();
    outbound?.unpipe();
    inbound.on("data", () => {});
    outbound?.on("data", () => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const { inbound, outbound } of this.#pairs) {
      inbound.destroy();
      outbound?.destroy();
    }
    this.#pairs.clear();
    await closed;
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
