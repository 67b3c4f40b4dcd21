/**
 * The relay's listener: `node:http` (or `node:https` with TLS) under Deno,
 * because its `upgrade` event hands over the raw socket that the WebSocket
 * engine needs. Ordinary requests are answered by a fetch-style handler
 * (`Request` in, `Response` out), the same one a program can mount on its
 * own `Deno.serve`, so routes are written once. Its errors go to the log:
 * a handler that throws (500), a request `node:http` cannot read (logged
 * at debug), an error of the listener.
 *
 * Everything before an upgrade has a deadline and a size ({@link HttpLimits},
 * enforced by `node:http` itself, whose Deno version honours each option;
 * see `tests/http_limits_test.ts`), every TCP connection counts against
 * `server.max_connections` from accept to close ({@link ConnectionLimit}),
 * and `accept_guard.ts` keeps the listener accepting when descriptors run
 * out.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerOptions,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { Readable } from "node:stream";
import { descriptorFreed, guardAccept } from "./accept_guard.ts";
import type { RequestHead } from "./auth.ts";
import { errorFields } from "../base/log.ts";
import { type HttpTimeoutPhase, RelayStats } from "../core/stats.ts";

const log = getLogger(["relay", "http"]);

/** A fetch-style handler as `Deno.serve` takes it. */
export type FetchHandler = (
  request: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Response | Promise<Response>;

/** What a WebSocket upgrade is handed: the request, its socket, and bytes read past its head. */
export type UpgradeHandler = (request: IncomingMessage, socket: Duplex, head: Uint8Array) => void;

/** Where and how to listen. */
export interface ListenOptions {
  hostname: string;
  port: number;
  reusePort?: boolean;
  /** PEM certificate chain and key: serve TLS. */
  cert?: string;
  key?: string;
  /** Deadlines and sizes for all that is not an upgraded WebSocket (`server.ts`'s `httpLimits`). */
  http: HttpLimits;
  /** Count TCP connections, and refuse them at accept over a limit. */
  connections?: ConnectionLimit;
  /** Where refusals, timeouts and accept errors are counted. */
  stats?: RelayStats;
}

/** Deadlines (0: none) and sizes for requests; an upgraded WebSocket has its own clocks. */
export interface HttpLimits {
  /** From accept (on a kept-alive connection, the next request's first byte) to the complete head. */
  headerTimeoutMs: number;
  /** After the head, how long the body may take at least; the whole request gets both. */
  bodyTimeoutMs: number;
  /** How long a kept-alive connection may wait for its next request. */
  keepAliveTimeoutMs: number;
  /** Request line and headers together; more is answered with 431. */
  maxHeaderBytes: number;
}

/** TCP connections counted from accept to close, upgraded or not. */
export interface ConnectionLimit {
  /** Open connections at index 0; shared memory when several listeners share the limit. */
  count: Int32Array;
  /** Over this many a new connection is closed at accept (0: no limit). */
  max: number;
}

/** A listening server. */
export interface NodeListener {
  readonly addr: Deno.NetAddr;
  /** Stops accepting and closes idle keep-alive connections; resolves once closed. */
  close(): Promise<void>;
  /** Resolves when the server has closed. */
  readonly finished: Promise<void>;
}

/**
 * Listens as `options` says, answering requests with `handler` and passing
 * upgrades to `onUpgrade`. Rejects with `Cannot listen for <what> on
 * <host:port>: <why>` when the port cannot be had.
 */
export async function listenNode(
  what: string,
  options: ListenOptions,
  handler: FetchHandler,
  onUpgrade: UpgradeHandler,
): Promise<NodeListener> {
  const { hostname, port, reusePort = false, cert, key } = options;
  const { http, connections, stats = new RelayStats() } = options;
  const tls = cert !== undefined && key !== undefined;
  const server: Server = tls
    ? createHttpsServer({
      cert,
      key,
      ...serverOptions(http),
      // A TLS handshake comes before the head: it gets the head's deadline (Node's default is 120 s).
      ...(http.headerTimeoutMs > 0 ? { handshakeTimeout: http.headerTimeoutMs } : {}),
    })
    : createHttpServer(serverOptions(http));
  server.on("request", (request, response) => {
    answer(handler, request, response, tls, stats);
  });
  server.on("upgrade", onUpgrade);
  watchLimits(server, stats);
  if (connections !== undefined) gateConnections(server, connections, stats, tls);
  const { promise: finished, resolve: closed } = Promise.withResolvers<void>();
  server.on("close", () => closed());
  await new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      const why = error.code === "EADDRINUSE" ? "address already in use" : error.message;
      reject(
        new Error(`Cannot listen for ${what} on ${formatHost(hostname)}:${port}: ${why}`, {
          cause: error,
        }),
      );
    };
    server.once("error", onError);
    server.listen({ host: hostname, port, reusePort }, () => {
      server.off("error", onError);
      // Unheard, an error event would be thrown as an uncaught exception.
      server.on("error", (error) => {
        log.error("{what} listener: {cause}", { what, ...errorFields(error, true) });
      });
      resolve();
    });
  });
  const address = server.address();
  if (address === null || typeof address === "string") {
    throw new Error(`Cannot listen for ${what}: no TCP address`);
  }
  const where = `${tls ? "https" : "http"}://${formatHost(address.address)}:${address.port}/`;
  const unguard = guardAccept(server, `${what} on ${where}`, stats, connections?.count);
  server.on("close", unguard);
  return {
    addr: { transport: "tcp", hostname: address.address, port: address.port },
    close() {
      unguard();
      server.close();
      server.closeAllConnections();
      return finished;
    },
    finished,
  };
}

/** `node:http`'s options for `limits`; Deno's `node:http` honours each of them. */
function serverOptions(limits: HttpLimits): ServerOptions {
  const { headerTimeoutMs, bodyTimeoutMs, keepAliveTimeoutMs, maxHeaderBytes } = limits;
  // Node's requestTimeout runs from the request's first byte to its last: the head's time and the body's.
  const requestTimeoutMs = bodyTimeoutMs > 0 ? headerTimeoutMs + bodyTimeoutMs : 0;
  const deadlines = [headerTimeoutMs, requestTimeoutMs].filter((ms) => ms > 0);
  return {
    headersTimeout: headerTimeoutMs,
    requestTimeout: requestTimeoutMs,
    keepAliveTimeout: keepAliveTimeoutMs,
    maxHeaderSize: maxHeaderBytes,
    // One sweep over requests in progress for every server, not a timer each; a quarter of the
    // shortest deadline keeps closes within 25% of it.
    connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.min(...deadlines) / 4)),
  } as ServerOptions;
}

const BAD_REQUEST = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const HEADERS_TOO_LARGE =
  "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const REQUEST_TIMEOUT =
  "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const LIMIT_REACHED = "Service Unavailable: connection limit reached\n";
const CONNECTION_LIMIT = `HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n` +
  `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${LIMIT_REACHED.length}\r\n\r\n` +
  LIMIT_REACHED;

/**
 * Counts what `node:http` closes for running out of time. With a listener
 * for these events it closes nothing itself, so each handler answers (as
 * it would: 431, 408, 400) and closes.
 */
function watchLimits(server: Server, stats: RelayStats): void {
  const timedOut = (phase: HttpTimeoutPhase) => stats.httpTimeouts[phase]++;
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) => {
    const { remoteAddress, remotePort } = socket as Socket;
    log.debug("unreadable request from {remote}: {cause}", {
      remote: `${formatHost(remoteAddress ?? "")}:${remotePort}`,
      ...errorFields(error),
    });
    let reply: string | undefined = BAD_REQUEST;
    if (error.code === "ERR_HTTP_REQUEST_TIMEOUT") {
      // A response object exists once the head is in: then it was the body that was late.
      timedOut((socket as { _httpMessage?: unknown })._httpMessage ? "body" : "header");
      reply = REQUEST_TIMEOUT;
    } else if (error.code === "HPE_HEADER_OVERFLOW") {
      reply = HEADERS_TOO_LARGE;
    } else if (error.code === "ECONNRESET" || error.code === "EPIPE") {
      reply = undefined;
    }
    const response = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (reply !== undefined && socket.writable && !response?.headersSent) socket.write(reply);
    socket.destroy();
  });
  // Emitted only for the keep-alive wait: `server.timeout` (inactivity) stays 0.
  server.on("timeout", (socket: Duplex) => {
    timedOut("idle");
    socket.destroy();
  });
  server.on("tlsClientError", (error: NodeJS.ErrnoException, socket: Duplex) => {
    // Node names it ERR_TLS_HANDSHAKE_TIMEOUT; Deno's has only the message.
    if (error.code === "ERR_TLS_HANDSHAKE_TIMEOUT" || error.message === "TLS handshake timeout") {
      timedOut("header");
    }
    socket.destroy();
  });
}

const LIMIT = Symbol("relay.connectionLimit");
type LimitedServer = Server & { [LIMIT]?: ConnectionLimit };

/**
 * Counts every TCP connection from accept to close against `limit`, and
 * closes those over it at once: idle connections cannot take the
 * descriptors the relay needs. A refused connection never reaches
 * `node:http` (its `connection` listeners run only for admitted ones), so
 * a request it sent is not answered; plain HTTP gets a 503 first.
 */
function gateConnections(
  server: Server,
  limit: ConnectionLimit,
  stats: RelayStats,
  tls: boolean,
): void {
  (server as LimitedServer)[LIMIT] = limit;
  const serve = server.listeners("connection") as ((this: Server, socket: Socket) => void)[];
  server.removeAllListeners("connection");
  server.on("connection", function (this: Server, socket: Socket) {
    const { count, max } = limit;
    if (Atomics.add(count, 0, 1) >= max && max > 0) {
      Atomics.sub(count, 0, 1);
      stats.rejected.max_connections++;
      refuse(socket, tls);
      return;
    }
    socket.on("close", connectionClosed);
    for (const listener of serve) listener.call(this, socket);
  });
}

/**
 * Closes a connection over the limit. Its descriptor goes once the answer is
 * written (a write followed at once by `destroy()` would be dropped); a TLS
 * connection has no plain answer and goes at once.
 */
function refuse(socket: Socket, tls: boolean): void {
  socket.on("error", destroySocket);
  if (tls) return void socket.destroy();
  socket.on("finish", destroySocket);
  socket.end(CONNECTION_LIMIT);
}

/** A socket that fails or is done must not hold its descriptor, nor take the process with it. */
export function destroySocket(this: Duplex, error?: Error): void {
  // Also a "finish" listener, which has no error.
  if (error instanceof Error) log.debug("socket error: {cause}", errorFields(error));
  this.destroy();
}

/** One function for every connection: no closure per connection. */
function connectionClosed(this: Socket & { server?: LimitedServer }): void {
  const limit = this.server?.[LIMIT];
  if (limit !== undefined) Atomics.sub(limit.count, 0, 1);
  descriptorFreed();
}

/** `[host]` for IPv6 addresses, as URLs and `host:port` need. */
export function formatHost(hostname: string): string {
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}

/** The web `Request` for a node request; the body streams (only a publish reads it). */
function toRequest(request: IncomingMessage, tls: boolean): Request {
  const headers = new Headers();
  for (const [name, value] of Object.entries(request.headers)) {
    if (value === undefined) continue;
    for (const one of Array.isArray(value) ? value : [value]) headers.append(name, one);
  }
  const method = request.method ?? "GET";
  const hasBody = method !== "GET" && method !== "HEAD";
  const host = request.headers.host ?? "localhost";
  return new Request(`${tls ? "https" : "http"}://${host}${request.url ?? "/"}`, {
    method,
    headers,
    body: hasBody ? Readable.toWeb(request) as ReadableStream<Uint8Array> : undefined,
    // @ts-ignore: `duplex` is required for a streamed body but not yet in the DOM types.
    duplex: hasBody ? "half" : undefined,
  });
}

/**
 * The URL and headers of a node request without building a `Request`: an
 * upgrade needs only a few headers, and every connection pays for what is
 * built here.
 */
export function headOf(request: IncomingMessage, tls: boolean): RequestHead {
  const headers = request.headers;
  return {
    url: `${tls ? "https" : "http"}://${headers.host ?? "localhost"}${request.url ?? "/"}`,
    headers: {
      get(name: string): string | null {
        const value = headers[name.toLowerCase()];
        return value === undefined ? null : Array.isArray(value) ? value.join(", ") : value;
      },
    },
  };
}

/** The peer of a node request, as `Deno.serve` would report it. */
export function remoteOf(request: IncomingMessage): Deno.NetAddr {
  return {
    transport: "tcp",
    hostname: request.socket.remoteAddress ?? "",
    port: request.socket.remotePort ?? 0,
  };
}

async function answer(
  handler: FetchHandler,
  request: IncomingMessage,
  response: import("node:http").ServerResponse,
  tls: boolean,
  stats: RelayStats,
): Promise<void> {
  let reply: Response;
  try {
    reply = await handler(toRequest(request, tls), {
      remoteAddr: remoteOf(request),
      completed: Promise.resolve(),
    });
  } catch (error) {
    // Handlers answer what they expect themselves; this is a bug's way out.
    stats.unexpectedErrors.handler++;
    log.error("{method} {path} failed: {cause}", {
      method: request.method,
      path: new URL(request.url ?? "/", "http://relay").pathname,
      ...errorFields(error, true),
    });
    reply = new Response("Internal Server Error\n", { status: 500 });
  }
  const body = new Uint8Array(await reply.arrayBuffer());
  const headers: Record<string, string> = {};
  reply.headers.forEach((value, name) => headers[name] = value);
  headers["content-length"] = String(body.length);
  response.writeHead(reply.status, headers);
  response.end(body);
}
