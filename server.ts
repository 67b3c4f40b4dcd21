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
import { createMetricsHandler } from "./metrics.ts";
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

/** Starts a relay as `config` describes; throws {@link RelayStartError} when it cannot. */
export async function startRelay(config: Config): Promise<Relay> {
  const { server: serverConfig, websocket, metrics } = config;
  const hub = new Hub({ echo: websocket.echo });
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
    if (limit > 0 && connections.size >= limit) {
      return reject(503, "max_connections", "Service Unavailable: connection limit reached");
    }
    // The request is consumed by the upgrade: read what we need first.
    const { hostname, port } = info.remoteAddr;
    const room = websocket.rooms === "path" ? new URL(request.url).pathname : "";
    let upgraded;
    try {
      upgraded = Deno.upgradeWebSocket(request, { idleTimeout: idleTimeoutSeconds });
    } catch (error) {
      return new Response(`Bad Request: ${(error as Error).message}\n`, { status: 400 });
    }
    const client = new Client(upgraded.socket, hub, {
      ...clientOptions,
      room,
      remoteAddress: `${hostname}:${port}`,
    });
    connections.add(client);
    client.closed.then(() => connections.delete(client));
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
    ...tls,
  }, handler);

  let metricsServer: Deno.HttpServer<Deno.NetAddr> | undefined;
  if (metrics.enabled) {
    const expose = createMetricsHandler({ stats, connectedClients: () => hub.size });
    try {
      metricsServer = listen(
        "metrics",
        {
          hostname: metrics.host,
          port: metrics.port,
        },
        (request) =>
          new URL(request.url).pathname === metrics.path
            ? expose(request)
            : new Response("Not Found\n", { status: 404 }),
      );
    } catch (error) {
      await wsServer.shutdown();
      await hub.shutdown();
      throw error;
    }
  }

  const scheme = tls ? "wss" : "ws";
  const addr = wsServer.addr;
  const url = `${scheme}://${formatHost(addr.hostname)}:${addr.port}/`;
  log.info("relay {version} listening on {url}", { version: VERSION, url });
  if (metricsServer) {
    const { hostname, port } = metricsServer.addr;
    log.info("metrics on {url}", { url: `http://${formatHost(hostname)}:${port}${metrics.path}` });
  }

  const shutdownTimeoutMs = durationMs(serverConfig.shutdown_timeout);
  let stopping: Promise<void> | undefined;
  const shutdown = () => {
    stopping ??= (async () => {
      draining = true;
      log.info("shutting down: closing {count} clients", { count: hub.size });
      await hub.shutdown();
      const stragglers = await waitForClose(connections, shutdownTimeoutMs);
      if (stragglers > 0) {
        log.warning("{count} clients did not finish closing within {timeout}", {
          count: stragglers,
          timeout: serverConfig.shutdown_timeout,
        });
      }
      await Promise.all([wsServer.shutdown(), metricsServer?.shutdown()]);
      log.info("shut down");
    })();
    return stopping;
  };

  const finished = Promise.all([wsServer.finished, metricsServer?.finished, hub.finished])
    .then(() => {});
  return {
    hub,
    addr,
    url,
    metricsAddr: metricsServer?.addr,
    shutdown,
    finished,
    [Symbol.asyncDispose]: shutdown,
  };
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
