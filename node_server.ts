/**
 * The relay's listener: `node:http` (or `node:https` with TLS) under Deno,
 * because its `upgrade` event hands over the raw socket that the WebSocket
 * engine needs. Ordinary requests are answered by a fetch-style handler
 * (`Request` in, `Response` out), the same one a program can mount on its
 * own `Deno.serve`, so routes are written once. Its errors go to the log:
 * a handler that throws (500), a request `node:http` cannot parse (answered
 * as `node:http` would, logged at debug), an error of the listener.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { createServer as createHttpServer, type IncomingMessage, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { Readable } from "node:stream";
import type { RequestHead } from "./auth.ts";
import { errorFields } from "./log.ts";

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
  const server: Server = cert !== undefined && key !== undefined
    ? createHttpsServer({ cert, key })
    : createHttpServer();
  server.on("request", (request, response) => {
    answer(handler, request, response, options.cert !== undefined);
  });
  server.on("upgrade", onUpgrade);
  server.on("clientError", answerClientError);
  const { promise: finished, resolve: closed } = Promise.withResolvers<void>();
  server.on("close", () => closed());
  await new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      const why = error.code === "EADDRINUSE" ? "address already in use" : error.message;
      reject(new Error(`Cannot listen for ${what} on ${formatHost(hostname)}:${port}: ${why}`));
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
  return {
    addr: { transport: "tcp", hostname: address.address, port: address.port },
    close() {
      server.close();
      server.closeAllConnections();
      return finished;
    },
    finished,
  };
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
): Promise<void> {
  let reply: Response;
  try {
    reply = await handler(toRequest(request, tls), {
      remoteAddr: remoteOf(request),
      completed: Promise.resolve(),
    });
  } catch (error) {
    // Handlers answer what they expect themselves; this is a bug's way out.
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

/** What `node:http` answers a request it cannot parse when nobody listens for `clientError`. */
const CLIENT_ERROR_ANSWERS: Record<string, string> = {
  HPE_HEADER_OVERFLOW: "431 Request Header Fields Too Large",
  HPE_CHUNK_EXTENSIONS_OVERFLOW: "413 Payload Too Large",
  ERR_HTTP_REQUEST_TIMEOUT: "408 Request Timeout",
};

/**
 * A request `node:http` could not read (bad syntax, oversized head, a reset
 * mid-request): answered as `node:http` does by default, and logged at
 * debug, as clients that go away are.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  const { remoteAddress, remotePort, bytesWritten } = socket as Socket;
  log.debug("unreadable request from {remote}: {cause}", {
    remote: `${formatHost(remoteAddress ?? "")}:${remotePort}`,
    ...errorFields(error),
  });
  if (socket.writable && bytesWritten === 0) {
    const status = CLIENT_ERROR_ANSWERS[error.code ?? ""] ?? "400 Bad Request";
    socket.write(`HTTP/1.1 ${status}\r\nConnection: close\r\n\r\n`);
  }
  socket.destroy();
}
