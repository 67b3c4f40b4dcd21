/**
 * The network edge: `Deno.serve` for WebSockets (plain or TLS) and for
 * metrics, routing (upgrade, `/healthz`, `/readyz`, the 426 hint), the
 * checks made before an upgrade (origin, connection limit, shutdown), and
 * the relay's lifecycle through {@link startRelay}. Fan-out is the hub's.
 *
 * @example
 * ```ts
 * import { DEFAULT_CONFIG } from "./config.ts";
 * import { startRelay } from "./server.ts";
 * const config = structuredClone(DEFAULT_CONFIG);
 * config.server.port = 0;
 * config.metrics.enabled = false;
 * await using relay = await startRelay(config);
 * console.log(relay.url); // ws://0.0.0.0:<port>/
 * ```
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { Client } from "./client.ts";
import { type Config, durationMs } from "./config.ts";
import { Hub } from "./hub.ts";
import { createMetricsHandler, type MetricsSource } from "./metrics.ts";
import type { RejectReason } from "./stats.ts";
import { VERSION } from "./version.ts";

/** Thrown when the relay cannot start (port taken, TLS files unreadable); exit code 1. */
export class RelayStartError extends Error {
  override name = "RelayStartError";
}

/** A running relay, as {@link startRelay} returns it. */
export interface Relay extends AsyncDisposable {
  /** The hub, for publishing from the embedding program and for events. */
  readonly hub: Hub;
  /** Where WebSocket clients connect (the bound port, even when 0 was asked for). */
  readonly addr: Deno.NetAddr;
  /** `ws://` or `wss://` URL of {@link addr}. */
  readonly url: string;
  /** Where `/metrics` is served, or `undefined` when metrics are off. */
  readonly metricsAddr: Deno.NetAddr | undefined;
  /**
   * Stops accepting upgrades (`/readyz` answers 503), closes every client
   * with 1001, waits for them up to `server.shutdown_timeout`, then stops
   * listening. Safe to call twice; both calls get the same promise.
   */
  shutdown(): Promise<void>;
  /** Resolves when the relay has shut down. */
  readonly finished: Promise<void>;
}

const log = getLogger(["relay", "server"]);

/**
 * Starts a relay as `config` describes; throws {@link RelayStartError} when
 * it cannot. With `server.workers` above 1 the relay runs in that many
 * workers sharing the port (see `cluster.ts`), and the returned `hub` is a
 * publisher into all of them that has no clients of its own.
 */
export async function startRelay(config: Config): Promise<Relay> {
  if (config.server.workers > 1) {
    // Loaded only when asked for, so a single-worker relay runs none of it.
    const { startCluster } = await import("./cluster.ts");
    return await startCluster(config);
  }
  return await serveRelay(config);
}

/** How one isolate's relay fits into a cluster; {@link startRelay} needs none of it. */
export interface ServeOptions {
  /** The hub to serve; a worker passes one linked to its peers. */
  hub?: Hub;
  /** Share the port with other listeners (`SO_REUSEPORT`). @default false */
  reusePort?: boolean;
  /**
   * Connections open across the whole relay, at index 0; shared memory in a
   * cluster so `server.max_connections` holds for the sum of all workers.
   */
  connectionCount?: Int32Array;
  /** Log listening and shutting down; a cluster logs them once for all workers. @default true */
  logLifecycle?: boolean;
}

/** Serves a relay in this isolate: the WebSocket port, and metrics unless turned off. */
export async function serveRelay(config: Config, options: ServeOptions = {}): Promise<Relay> {
  const { server: serverConfig, websocket, metrics } = config;
  const {
    hub = new Hub({ echo: websocket.echo }),
    reusePort = false,
    connectionCount = new Int32Array(1),
    logLifecycle = true,
  } = options;
  const stats = hub.stats;
  const connections = new Set<Client>();
  const allowedOrigins = new Set(serverConfig.allowed_origins.map((o) => o.toLowerCase()));
  const anyOrigin = allowedOrigins.size === 0 || allowedOrigins.has("*");
  const idleTimeoutSeconds = durationMs(websocket.idle_timeout) / 1000;
  const clientOptions = {
    sendBufferBytes: websocket.send_buffer_bytes,
    maxMessageBytes: websocket.max_message_bytes,
  };
  let draining = false;

  const reject = (status: number, reason: RejectReason, message: string) => {
    stats.rejected[reason]++;
    return new Response(`${message}\n`, { status });
  };

  const upgrade = (request: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => {
    if (draining) return reject(503, "shutting_down", "Service Unavailable: shutting down");
    const origin = request.headers.get("origin");
    if (!anyOrigin && origin !== null && !allowedOrigins.has(origin.toLowerCase())) {
      return reject(403, "origin", `Forbidden: origin ${origin} is not allowed`);
    }
    const limit = serverConfig.max_connections;
    if (Atomics.add(connectionCount, 0, 1) >= limit && limit > 0) {
      Atomics.sub(connectionCount, 0, 1);
      return reject(503, "max_connections", "Service Unavailable: connection limit reached");
    }
    // The request is consumed by the upgrade: read what we need first.
    const { hostname, port } = info.remoteAddr;
    const room = websocket.rooms === "path" ? new URL(request.url).pathname : "";
    let upgraded;
    try {
      upgraded = Deno.upgradeWebSocket(request, { idleTimeout: idleTimeoutSeconds });
    } catch (error) {
      Atomics.sub(connectionCount, 0, 1);
      return new Response(`Bad Request: ${(error as Error).message}\n`, { status: 400 });
    }
    const client = new Client(upgraded.socket, hub, {
      ...clientOptions,
      room,
      remoteAddress: `${hostname}:${port}`,
    });
    connections.add(client);
    client.closed.then(() => {
      connections.delete(client);
      Atomics.sub(connectionCount, 0, 1);
    });
    return upgraded.response;
  };

  const handler = (request: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => {
    if (request.headers.get("upgrade")?.toLowerCase() === "websocket") {
      return upgrade(request, info);
    }
    const { pathname } = new URL(request.url);
    if (pathname === "/healthz") return new Response("ok\n");
    if (pathname === "/readyz") {
      return draining ? new Response("shutting down\n", { status: 503 }) : new Response("ready\n");
    }
    return new Response(
      "Upgrade Required: this is a WebSocket relay; connect with a WebSocket client (ws:// or wss://).\n",
      { status: 426, headers: { upgrade: "websocket", connection: "Upgrade" } },
    );
  };

  const tls = serverConfig.tls.enabled
    ? {
      cert: await readTlsFile("certificate", serverConfig.tls.cert_file),
      key: await readTlsFile("key", serverConfig.tls.key_file),
    }
    : undefined;
  const wsServer = listen("WebSocket", {
    hostname: serverConfig.host,
    port: serverConfig.port,
    reusePort,
    ...tls,
  }, handler);

  let metricsServer: Deno.HttpServer<Deno.NetAddr> | undefined;
  if (metrics.enabled) {
    try {
      metricsServer = listenMetrics(metrics, () => ({ stats, connectedClients: hub.size }));
    } catch (error) {
      await wsServer.shutdown();
      await hub.shutdown();
      throw error;
    }
  }

  const url = relayUrl(wsServer.addr, tls !== undefined);
  if (logLifecycle) announceListening(url, metricsServer?.addr, metrics.path);

  const shutdownTimeoutMs = durationMs(serverConfig.shutdown_timeout);
  let stopping: Promise<void> | undefined;
  const shutdown = () => {
    stopping ??= (async () => {
      draining = true;
      if (logLifecycle) log.info("shutting down: closing {count} clients", { count: hub.size });
      await hub.shutdown();
      const stragglers = await waitForClose(connections, shutdownTimeoutMs);
      if (stragglers > 0) {
        log.warning("{count} clients did not finish closing within {timeout}", {
          count: stragglers,
          timeout: serverConfig.shutdown_timeout,
        });
      }
      await Promise.all([wsServer.shutdown(), metricsServer?.shutdown()]);
      if (logLifecycle) log.info("shut down");
    })();
    return stopping;
  };

  const finished = Promise.all([wsServer.finished, metricsServer?.finished, hub.finished])
    .then(() => {});
  return {
    hub,
    addr: wsServer.addr,
    url,
    metricsAddr: metricsServer?.addr,
    shutdown,
    finished,
    [Symbol.asyncDispose]: shutdown,
  };
}

/** The `ws://` or `wss://` URL clients use for `addr`. */
export function relayUrl(addr: Deno.NetAddr, tls: boolean): string {
  return `${tls ? "wss" : "ws"}://${formatHost(addr.hostname)}:${addr.port}/`;
}

/** Logs where the relay listens: the line scripts and tests wait for. */
export function announceListening(
  url: string,
  metricsAddr: Deno.NetAddr | undefined,
  metricsPath: string,
): void {
  log.info("relay {version} listening on {url}", { version: VERSION, url });
  if (metricsAddr) {
    const { hostname, port } = metricsAddr;
    log.info("metrics on {url}", { url: `http://${formatHost(hostname)}:${port}${metricsPath}` });
  }
}

/** Serves `/metrics` from `source`; 404 for any other path. */
export function listenMetrics(
  metrics: Config["metrics"],
  source: MetricsSource,
): Deno.HttpServer<Deno.NetAddr> {
  const expose = createMetricsHandler(source);
  return listen(
    "metrics",
    { hostname: metrics.host, port: metrics.port },
    (request) =>
      new URL(request.url).pathname === metrics.path
        ? expose(request)
        : new Response("Not Found\n", { status: 404 }),
  );
}

/** Resolves with how many connections were still open when the deadline passed. */
async function waitForClose(connections: Set<Client>, timeoutMs: number): Promise<number> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      Promise.all([...connections].map((client) => client.closed)),
      new Promise((resolve) => timer = setTimeout(resolve, timeoutMs)),
    ]);
  } finally {
    clearTimeout(timer);
  }
  return connections.size;
}

function listen(
  what: string,
  options: Deno.ServeTcpOptions & Partial<Deno.TlsCertifiedKeyPem>,
  handler: Deno.ServeHandler<Deno.NetAddr>,
): Deno.HttpServer<Deno.NetAddr> {
  try {
    return Deno.serve({ ...options, onListen: () => {} }, handler);
  } catch (error) {
    const where = `${formatHost(options.hostname ?? "0.0.0.0")}:${options.port}`;
    const why = error instanceof Deno.errors.AddrInUse
      ? "address already in use"
      : (error as Error).message;
    throw new RelayStartError(`Cannot listen for ${what} on ${where}: ${why}`);
  }
}

async function readTlsFile(what: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new RelayStartError(
      `Cannot read TLS ${what} file ${path}: ${(error as Error).message}`,
    );
  }
}

function formatHost(hostname: string): string {
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}
