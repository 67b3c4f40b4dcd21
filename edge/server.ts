/**
 * The network edge, handed its hub: routing (upgrade, `/healthz`,
 * `/readyz`, the publish API, the example page, the 426 hint), the checks
 * made before an upgrade (origin, auth, connection limit, shutdown),
 * upgrades handed to the engine (`engine/`) or to Deno's runtime
 * WebSocket, and the metrics listener. It builds no hub and knows no
 * scale-out: `relay.ts` wires the hub, its link and this edge, and owns
 * start and shutdown. Fan-out is the hub's; Redis is the broker's.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { Client } from "../core/client.ts";
import { type Config, durationMs } from "../config.ts";
import { Authenticator, type Grant, type RequestHead } from "./auth.ts";
import type { Connection } from "../engine/connection.ts";
import { WebSocketEngine } from "../engine/engine.ts";
import { checkHandshake, httpAnswer, type Refusal } from "../engine/handshake.ts";
import { RuntimeConnection } from "../engine/runtime_connection.ts";
import {
  destroySocket,
  formatHost,
  headOf,
  type HttpLimits,
  listenNode,
  type NodeListener,
  remoteOf,
} from "./node_server.ts";
import { clientHost, type Hub } from "../core/hub.ts";
import { createPublishHandler, PUBLISH_PATH, type Unavailable } from "./publish_api.ts";
import { createMetricsHandler, type MetricsSource } from "./metrics.ts";
import type { RejectReason, RelayStats } from "../core/stats.ts";

/** Thrown when the relay cannot start (port taken, TLS files unreadable); exit code 1. */
export class RelayStartError extends Error {
  /** `"RelayStartError"`. */
  override name = "RelayStartError";
}

const log = getLogger(["relay", "server"]);

/** Options for `createRelayHandler`. */
export interface HandlerOptions {
  /** The hub to serve; a worker passes one linked to its peers. */
  hub?: Hub;
  /**
   * Connections open across the whole relay, at index 0; shared memory in a
   * cluster so `server.max_connections` holds for the sum of all workers.
   */
  connectionCount?: Int32Array;
  /**
   * The listener counts every TCP connection in `connectionCount` from
   * accept to close (as `serveRelay`'s does), so an upgrade takes no
   * slot of its own. Without it, upgrades are what is counted.
   * @default false
   */
  countedAtAccept?: boolean;
}

/** A relay without a listener, for a program that serves it from its own `Deno.serve`. */
export interface RelayHandler {
  /** The hub, for publishing and for events. */
  readonly hub: Hub;
  /**
   * Answers one request: WebSocket upgrades (on any path), `/healthz`,
   * `/readyz`, `POST /api/publish`, the example page when enabled, and a
   * 426 hint for anything else.
   */
  readonly handler: (
    request: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ) => Promise<Response>;
  /**
   * Takes a WebSocket upgrade from a `node:http` or `node:https` server's
   * `upgrade` event (`server.on("upgrade", relay.handleUpgrade)`), served by
   * the relay's own engine: the faster path, and the one that can release
   * a peer that never answers a close. {@link handler} upgrades with Deno's
   * runtime WebSocket instead.
   */
  readonly handleUpgrade: (request: IncomingMessage, socket: Duplex, head: Uint8Array) => void;
  /**
   * Stops accepting upgrades (`/readyz` answers 503), closes every client
   * with 1001 and waits for them up to `server.shutdown_timeout`; resolves
   * with how many were still open then.
   */
  drain(): Promise<number>;
}

/** What {@link createEdge} is handed: its hub, and whether the hub's link is down. */
export interface EdgeOptions extends Omit<HandlerOptions, "hub"> {
  /** The hub whose clients this edge serves. */
  hub: Hub;
  /**
   * True while a required link (`broker.required`) cannot deliver to the
   * other instances: `/readyz` and the publish API answer 503 then.
   * @default () => false
   */
  linkDown?: () => boolean;
}

/**
 * Builds the edge of `hub`: its request handler, its upgrade handler and
 * its drain. Throws {@link RelayStartError} when a file it needs (JWT key,
 * example page) cannot be read.
 */
export async function createEdge(config: Config, options: EdgeOptions): Promise<RelayHandler> {
  const { server: serverConfig, websocket } = config;
  const {
    hub,
    linkDown = () => false,
    connectionCount = new Int32Array(1),
    countedAtAccept = false,
  } = options;
  const auth = await Authenticator.create(config.auth).catch((error) => {
    throw new RelayStartError(error.message, { cause: error });
  });
  const stats = hub.stats;
  const host = clientHost(hub);
  let draining = false;
  // Whether the relay would deliver what it accepted now: /readyz and the publish API ask alike.
  const brokerRetrySeconds = Math.ceil(
    (durationMs(config.broker.ping_interval) + durationMs(config.broker.timeout)) / 1000,
  );
  const unavailable = (): Unavailable | undefined => {
    if (draining) return { reason: "shutting down", retryAfterSeconds: 1 };
    if (config.broker.required && linkDown()) {
      return { reason: "broker unreachable", retryAfterSeconds: brokerRetrySeconds };
    }
    return undefined;
  };
  const publish = createPublishHandler(config, hub, auth, stats, unavailable);
  const example = serverConfig.serve_example ? await readExample() : undefined;
  const connections = new Set<Client>();
  const allowedOrigins = new Set(serverConfig.allowed_origins.map((o) => o.toLowerCase()));
  const anyOrigin = allowedOrigins.size === 0 || allowedOrigins.has("*");
  const idleTimeoutMs = durationMs(websocket.idle_timeout);
  const maxMessageBytes = websocket.max_message_bytes;
  const sendBufferBytes = websocket.send_buffer_bytes;
  const limits = {
    maxMessageBytes,
    sendBufferBytes,
    sendBufferMaxBytes: websocket.send_buffer_max_bytes || 4 * sendBufferBytes,
    sendTimeoutMs: durationMs(websocket.send_timeout),
  };
  // Each worker of a cluster holds its share of the process-wide cap.
  const engine = new WebSocketEngine({
    ...limits,
    idleTimeoutMs,
    closeTimeoutMs: durationMs(websocket.close_timeout),
    maxBufferedBytes: Math.floor(serverConfig.max_buffered_bytes / serverConfig.workers),
  });
  const { messages_per_second: perSecond, burst } = websocket.rate_limit;
  const clientOptions = {
    protocol: websocket.protocol,
    rateLimit: perSecond > 0 ? { perSecond, burst: burst || Math.ceil(perSecond) } : undefined,
  };
  /** Resolved when the last connection is gone during a drain. */
  let allClosed: PromiseWithResolvers<void> | undefined;
  // One function for every client: no closure per connection. A connection
  // counted at accept gives its slot back when its socket closes, not here.
  const onClosed = (client: Client) => {
    stats.openSockets--;
    connections.delete(client);
    if (!countedAtAccept) Atomics.sub(connectionCount, 0, 1);
    if (connections.size === 0) allClosed?.resolve();
  };

  type Admission =
    | { ok: true; grant: Grant; room: string; remote: string }
    | { ok: false; refusal: Refusal };
  const refuse = (
    reason: RejectReason,
    status: number,
    message: string,
    headers?: Record<string, string>,
  ): Admission => {
    stats.rejected[reason]++;
    return { ok: false, refusal: { status, message, headers } };
  };

  /**
   * The checks every upgrade passes, whichever path carries it. On success
   * the connection is counted (unless it was at accept); the caller
   * releases it if it goes no further.
   */
  const admit = async (request: RequestHead, peer: Deno.NetAddr): Promise<Admission> => {
    if (draining) return refuse("shutting_down", 503, "Service Unavailable: shutting down");
    const origin = request.headers.get("origin");
    if (!anyOrigin && origin !== null && !allowedOrigins.has(origin.toLowerCase())) {
      return refuse("origin", 403, `Forbidden: origin ${origin} is not allowed`);
    }
    const remote = remoteAddress(request, peer, serverConfig.trust_proxy);
    const checked = await auth.check(request);
    if (!checked.ok) {
      log.info("refused {remote}: {reason}", { remote, reason: checked.reason });
      return checked.status === 400
        ? refuse(checked.reason, 400, `Bad Request: ${checked.message}`)
        : refuse(checked.reason, 401, `Unauthorized: ${checked.message}`, {
          "www-authenticate": 'Bearer realm="relay"',
        });
    }
    const limit = serverConfig.max_connections;
    if (!countedAtAccept && Atomics.add(connectionCount, 0, 1) >= limit && limit > 0) {
      Atomics.sub(connectionCount, 0, 1);
      return refuse("max_connections", 503, "Service Unavailable: connection limit reached");
    }
    const room = websocket.rooms === "path" ? new URL(request.url).pathname : "";
    return { ok: true, grant: checked.grant, room, remote };
  };

  const serveClient = (connection: Connection, admitted: Admission & { ok: true }) => {
    const { grant, room, remote } = admitted;
    const client = new Client(connection, host, {
      ...clientOptions,
      room,
      remoteAddress: remote,
      expiresAt: grant.expiresAt,
      channels: grant.channels,
      onClosed,
    });
    connections.add(client);
    stats.openSockets++;
  };

  const handleUpgrade = async (request: IncomingMessage, socket: Duplex, head: Uint8Array) => {
    socket.on("error", destroySocket);
    const handshake = checkHandshake(request.method ?? "", request.headers);
    if (!handshake.ok) return void socket.end(httpAnswer(handshake));
    const tls = "encrypted" in socket;
    const admitted = await admit(headOf(request, tls), remoteOf(request));
    if (!admitted.ok) return void socket.end(httpAnswer(admitted.refusal));
    if (socket.destroyed) {
      if (!countedAtAccept) Atomics.sub(connectionCount, 0, 1);
      return;
    }
    serveClient(engine.accept(socket, head, handshake.key, admitted.grant.protocol), admitted);
  };

  const upgrade = async (request: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => {
    const admitted = await admit(request, info.remoteAddr);
    if (!admitted.ok) {
      const { status, message, headers } = admitted.refusal;
      return new Response(`${message}\n`, { status, headers });
    }
    let upgraded;
    try {
      upgraded = Deno.upgradeWebSocket(request, {
        idleTimeout: idleTimeoutMs / 1000,
        protocol: admitted.grant.protocol,
      });
    } catch (error) {
      if (!countedAtAccept) Atomics.sub(connectionCount, 0, 1);
      return new Response(`Bad Request: ${(error as Error).message}\n`, { status: 400 });
    }
    serveClient(new RuntimeConnection(upgraded.socket, limits), admitted);
    return upgraded.response;
  };

  const handler = async (request: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => {
    if (request.headers.get("upgrade")?.toLowerCase() === "websocket") {
      return await upgrade(request, info);
    }
    const { pathname } = new URL(request.url);
    if (pathname === "/healthz") return new Response("ok\n");
    if (pathname === "/readyz") {
      const down = unavailable();
      if (down !== undefined) return new Response(`${down.reason}\n`, { status: 503 });
      return new Response("ready\n");
    }
    if (pathname === PUBLISH_PATH) return await publish(request);
    const page = example?.get(pathname === "/" ? "/index.html" : pathname);
    if (page !== undefined) {
      return new Response(page.body, { headers: { "content-type": page.type } });
    }
    return new Response(
      "Upgrade Required: this is a WebSocket relay; connect with a WebSocket client (ws:// or wss://).\n",
      { status: 426, headers: { upgrade: "websocket", connection: "Upgrade" } },
    );
  };

  const shutdownTimeoutMs = durationMs(serverConfig.shutdown_timeout);
  const drain = async () => {
    draining = true;
    await hub.shutdown();
    if (connections.size > 0) {
      allClosed = Promise.withResolvers();
      await within(allClosed.promise, shutdownTimeoutMs);
    }
    return connections.size;
  };
  return {
    hub,
    handler,
    handleUpgrade: (request, socket, head) => void handleUpgrade(request, socket, head),
    drain,
  };
}

/** The deadlines and sizes `config` gives requests that are not upgraded. */
export function httpLimits(config: Config): HttpLimits {
  const { server } = config;
  return {
    headerTimeoutMs: durationMs(server.header_timeout),
    bodyTimeoutMs: durationMs(server.body_timeout),
    keepAliveTimeoutMs: durationMs(server.keepalive_timeout),
    maxHeaderBytes: server.max_header_bytes,
  };
}

/**
 * Serves `/metrics` from `source`; 404 for any other path. On `node:http`
 * like the WebSocket port, so that it too survives running out of
 * descriptors (`Deno.serve` stops for good at a failed accept, and its
 * `finished` rejects); accept errors are counted into `stats`.
 */
export async function listenMetrics(
  config: Config,
  source: MetricsSource,
  stats: RelayStats,
): Promise<NodeListener> {
  const { metrics } = config;
  const expose = createMetricsHandler(source);
  try {
    return await listenNode(
      "metrics",
      { hostname: metrics.host, port: metrics.port, http: httpLimits(config), stats },
      (request) =>
        new URL(request.url).pathname === metrics.path
          ? expose(request)
          : new Response("Not Found\n", { status: 404 }),
      rejectUpgrade,
    );
  } catch (error) {
    throw new RelayStartError((error as Error).message, { cause: error });
  }
}

/** The metrics port has no WebSockets. */
function rejectUpgrade(_request: IncomingMessage, socket: Duplex): void {
  socket.end("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
}

/** Resolves when `promise` does or `timeoutMs` has passed, whichever is first. */
async function within(promise: Promise<void>, timeoutMs: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([promise, new Promise((resolve) => timer = setTimeout(resolve, timeoutMs))]);
  } finally {
    clearTimeout(timer);
  }
}

/** The files `server.serve_example` serves, by path. */
async function readExample(): Promise<
  Map<string, { body: Uint8Array<ArrayBuffer>; type: string }>
> {
  const files = new Map();
  for (
    const [name, type] of [
      ["index.html", "text/html; charset=utf-8"],
      ["reconnecting_client.js", "text/javascript; charset=utf-8"],
    ]
  ) {
    const url = new URL(`../example/${name}`, import.meta.url);
    try {
      files.set(`/${name}`, { body: await Deno.readFile(url), type });
    } catch (error) {
      throw new RelayStartError(
        `Cannot read the example page ${url.pathname} (server.serve_example): ${
          (error as Error).message
        }`,
        { cause: error },
      );
    }
  }
  return files;
}

/**
 * The peer's address, for logs. Behind a proxy (`trust_proxy`) it is the
 * last `X-Forwarded-For` entry: the one our proxy added, which a client
 * cannot forge (entries before it can be anything the client sent).
 */
function remoteAddress(request: RequestHead, peer: Deno.NetAddr, trustProxy: boolean): string {
  const forwarded = trustProxy ? request.headers.get("x-forwarded-for") : null;
  const last = forwarded?.split(",").at(-1)?.trim();
  if (last) return last;
  return `${formatHost(peer.hostname)}:${peer.port}`;
}
