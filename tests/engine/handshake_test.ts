/**
 * Tests of the opening handshake (`engine/handshake.ts`): which requests
 * {@link checkHandshake} accepts and how it refuses the others (status,
 * message, headers), the `Sec-WebSocket-Accept` value against RFC 6455's
 * own example, the 101 answer, and the plain HTTP answers for refusals.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { IncomingHttpHeaders } from "node:http";
import {
  acceptKey,
  checkHandshake,
  type Handshake,
  httpAnswer,
  switchingProtocols,
} from "../../engine/handshake.ts";

const KEY = "dGhlIHNhbXBsZSBub25jZQ==";

/** Headers of a valid upgrade, as node:http presents them (lower-case names). */
function upgradeHeaders(patch: IncomingHttpHeaders = {}): IncomingHttpHeaders {
  return {
    host: "127.0.0.1",
    upgrade: "websocket",
    connection: "Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": KEY,
    ...patch,
  };
}

function refusal(handshake: Handshake): { status: number; message: string } {
  assert.equal(handshake.ok, false, "expected a refusal");
  if (handshake.ok) throw new Error("unreachable");
  return { status: handshake.status, message: handshake.message };
}

Deno.test("a valid upgrade is accepted with its key and no protocols", () => {
  assert.deepEqual(checkHandshake("GET", upgradeHeaders()), { ok: true, key: KEY, protocols: [] });
});

Deno.test("an upgrade that is not a GET is refused with 400", () => {
  for (const method of ["POST", "HEAD", "get", ""]) {
    const { status, message } = refusal(checkHandshake(method, upgradeHeaders()));
    assert.equal(status, 400);
    assert.match(message, /must be a GET/);
  }
});

Deno.test("Upgrade and Connection tokens match case-insensitively, in comma lists and arrays", () => {
  const accepted: IncomingHttpHeaders[] = [
    { upgrade: "WebSocket", connection: "upgrade" },
    { upgrade: "WEBSOCKET", connection: "UPGRADE" },
    { upgrade: " websocket ", connection: "keep-alive, Upgrade" },
    { upgrade: "h2c, websocket", connection: "Upgrade,keep-alive" },
    { connection: ["keep-alive", "Upgrade"] as unknown as string },
  ];
  for (const patch of accepted) {
    assert.equal(checkHandshake("GET", upgradeHeaders(patch)).ok, true, JSON.stringify(patch));
  }
});

Deno.test("a missing or wrong Upgrade header is refused with 400", () => {
  for (const upgrade of [undefined, "", "websockets", "web socket", "h2c"]) {
    const { status, message } = refusal(checkHandshake("GET", upgradeHeaders({ upgrade })));
    assert.equal(status, 400);
    assert.match(message, /Upgrade header must name websocket/);
  }
});

Deno.test("a Connection header without the Upgrade token is refused with 400", () => {
  for (const connection of [undefined, "", "keep-alive", "upgraded", "keep-alive upgrade"]) {
    const { status, message } = refusal(checkHandshake("GET", upgradeHeaders({ connection })));
    assert.equal(status, 400);
    assert.match(message, /Connection header must include Upgrade/);
  }
});

Deno.test("a version other than 13 is refused with 426 and Sec-WebSocket-Version: 13", () => {
  for (const version of [undefined, "8", "12", "14", "13, 8"]) {
    const handshake = checkHandshake("GET", upgradeHeaders({ "sec-websocket-version": version }));
    assert.deepEqual(handshake, {
      ok: false,
      status: 426,
      message: "Upgrade Required: only WebSocket version 13 is supported",
      headers: { "sec-websocket-version": "13" },
    });
  }
});

Deno.test("a key that is not 16 bytes in base64 is refused with 400", () => {
  for (
    const key of [
      undefined,
      "",
      "dGhlIHNhbXBsZSBub25jZQ", // padding missing
      "dGhlIHNhbXBsZSBub25jZQ=", // padding cut
      "dGhlIHNhbXBsZSBub25jZSE=", // 17 bytes
      "dGhlIHNhbXBsZSBub25j", // 15 bytes
      "dGhlIHNhbXBsZSBub25jZ!==", // not base64
      "dGhlIHNhbXBsZSBub25jZ-==", // base64url
      "AAAAAAAAAAAAAAAAAAAAAAAA", // 18 bytes, no padding
    ]
  ) {
    const handshake = checkHandshake("GET", upgradeHeaders({ "sec-websocket-key": key }));
    const { status, message } = refusal(handshake);
    assert.equal(status, 400, String(key));
    assert.match(message, /Sec-WebSocket-Key must be 16 bytes in base64/);
  }
});

Deno.test("a key is accepted with surrounding whitespace, and returned trimmed", () => {
  const handshake = checkHandshake("GET", upgradeHeaders({ "sec-websocket-key": ` ${KEY} ` }));
  assert.deepEqual(handshake, { ok: true, key: KEY, protocols: [] });
});

Deno.test("offered subprotocols are listed in order, trimmed, empty entries dropped", () => {
  const cases: [string, string[]][] = [
    ["json", ["json"]],
    ["json, raw", ["json", "raw"]],
    [" a ,, b ,", ["a", "b"]],
    ["", []],
  ];
  for (const [offered, protocols] of cases) {
    const handshake = checkHandshake(
      "GET",
      upgradeHeaders({ "sec-websocket-protocol": offered }),
    );
    assert.deepEqual(handshake, { ok: true, key: KEY, protocols }, offered);
  }
});

Deno.test("acceptKey() gives RFC 6455's example answer", () => {
  // RFC 6455 section 1.3.
  assert.equal(acceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
});

Deno.test("switchingProtocols() is a 101 answer with the accept key, and the protocol when given", () => {
  const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  assert.equal(
    text(switchingProtocols(KEY)),
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
  );
  assert.equal(
    text(switchingProtocols(KEY, "json")),
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: json\r\n\r\n",
  );
});

Deno.test("httpAnswer() is a complete answer: status line, close, body length in bytes, extra headers", () => {
  const answer = httpAnswer({
    status: 426,
    message: "Upgrade Required: version 13 ✓",
    headers: { "sec-websocket-version": "13" },
  });
  const [head, body] = answer.split("\r\n\r\n");
  assert.deepEqual(head.split("\r\n"), [
    "HTTP/1.1 426 Upgrade Required",
    "Connection: close",
    "Content-Type: text/plain; charset=utf-8",
    `Content-Length: ${new TextEncoder().encode("Upgrade Required: version 13 ✓\n").length}`,
    "sec-websocket-version: 13",
  ]);
  assert.equal(body, "Upgrade Required: version 13 ✓\n");
});

Deno.test("httpAnswer() names each known status, and says Error for others", () => {
  const statuses: [number, string][] = [
    [400, "Bad Request"],
    [401, "Unauthorized"],
    [403, "Forbidden"],
    [426, "Upgrade Required"],
    [503, "Service Unavailable"],
    [418, "Error"],
  ];
  for (const [status, text] of statuses) {
    const answer = httpAnswer({ status, message: "m" });
    assert.ok(answer.startsWith(`HTTP/1.1 ${status} ${text}\r\n`), answer);
    assert.ok(answer.endsWith("\r\nContent-Length: 2\r\n\r\nm\n"), answer);
  }
});
