/**
 * The server's side of the opening handshake (RFC 6455 section 4.2): what
 * makes an HTTP request a valid WebSocket upgrade, the 101 answer, and the
 * plain HTTP answers written on a raw socket when a request is refused.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";

/** Appended to the client's key before hashing (section 1.3). */
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** 16 bytes in base64: 22 characters and `==`. */
const KEY_PATTERN = /^[A-Za-z0-9+/]{22}==$/;

/** A refusal: the HTTP status, a one-line message, and any headers it needs. */
export interface Refusal {
  status: number;
  message: string;
  headers?: Record<string, string>;
}

/** The outcome of {@link checkHandshake}. */
export type Handshake =
  | { ok: true; key: string; protocols: string[] }
  | ({ ok: false } & Refusal);

/** Checks that a request is a WebSocket upgrade this server can accept. */
export function checkHandshake(method: string, headers: IncomingHttpHeaders): Handshake {
  const refuse = (status: number, message: string, extra?: Record<string, string>): Handshake => ({
    ok: false,
    status,
    message,
    headers: extra,
  });
  if (method !== "GET") return refuse(400, "Bad Request: a WebSocket upgrade must be a GET");
  if (!hasToken(headers.upgrade, "websocket")) {
    return refuse(400, "Bad Request: Upgrade header must name websocket");
  }
  if (!hasToken(headers.connection, "upgrade")) {
    return refuse(400, "Bad Request: Connection header must include Upgrade");
  }
  if (headers["sec-websocket-version"] !== "13") {
    return refuse(426, "Upgrade Required: only WebSocket version 13 is supported", {
      "sec-websocket-version": "13",
    });
  }
  const key = headers["sec-websocket-key"];
  if (key === undefined || !KEY_PATTERN.test(key.trim())) {
    return refuse(400, "Bad Request: Sec-WebSocket-Key must be 16 bytes in base64");
  }
  const offered = headers["sec-websocket-protocol"];
  const protocols = offered === undefined
    ? []
    : offered.split(",").map((p) => p.trim()).filter((p) => p !== "");
  return { ok: true, key: key.trim(), protocols };
}

/** The `Sec-WebSocket-Accept` value for `key`. */
export function acceptKey(key: string): string {
  return createHash("sha1").update(key + ACCEPT_GUID).digest("base64");
}

const encoder = new TextEncoder();

/** The 101 answer that completes the handshake, as bytes to write. */
export function switchingProtocols(key: string, protocol?: string): Uint8Array {
  const lines = [
    "HTTP/1.1 101 Switching Protocols",
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Accept: ${acceptKey(key)}`,
  ];
  if (protocol !== undefined) lines.push(`Sec-WebSocket-Protocol: ${protocol}`);
  return encoder.encode(`${lines.join("\r\n")}\r\n\r\n`);
}

/** A complete HTTP/1.1 answer with a text body, for a refused upgrade on a raw socket. */
export function httpAnswer({ status, message, headers = {} }: Refusal): string {
  const body = `${message}\n`;
  const lines = [
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}`,
    "Connection: close",
    "Content-Type: text/plain; charset=utf-8",
    `Content-Length: ${encoder.encode(body).length}`,
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
  ];
  return `${lines.join("\r\n")}\r\n\r\n${body}`;
}

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  426: "Upgrade Required",
  503: "Service Unavailable",
};

/** Whether a comma-separated header holds `token` (compared case-insensitively). */
function hasToken(value: string | string[] | undefined, token: string): boolean {
  if (value === undefined) return false;
  const list = Array.isArray(value) ? value.join(",") : value;
  return list.split(",").some((part) => part.trim().toLowerCase() === token);
}
