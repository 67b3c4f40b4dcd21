/**
 * RFC 6455 conformance over raw sockets, in the categories of the Autobahn
 * TestSuite: the opening handshake, framing (1.x to 4.x), fragmentation
 * (5.x), UTF-8 (6.x), closing (7.x), limits (9.x style), and the relay's own
 * deadlines (eviction, shutdown, idle). The cases are ours, written from
 * what each Autobahn case sends and expects; where Autobahn accepts a
 * NON-STRICT outcome (a message echoed or not before a protocol error), so
 * do we.
 *
 * The relay runs in `raw` mode with `echo: true`, so a client's message
 * comes back to it: the echo is how a case sees what the server made of its
 * frames. A case that breaks the protocol expects a close frame with the
 * code, then the end of the TCP connection; every wait has a deadline.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Config } from "../config.ts";
import type { Relay } from "../relay.ts";
import { connectRaw, nextEvent, scrape, startTestRelay, TestClient, within } from "./helpers.ts";
import {
  acceptFor,
  type Close,
  closePayload,
  encodeFrame,
  type Frame,
  type FrameSpec,
  Opcode,
  type RawWebSocket,
  requestUpgrade,
  type UpgradeRequest,
  type UpgradeResponse,
} from "./raw_ws.ts";

const encoder = new TextEncoder();

/** `close_timeout` for every relay here: short, so unanswered closes end fast. */
const CLOSE_TIMEOUT = "1s";

/** How long any one event may take on loopback before the case fails. */
const WAIT_MS = 3000;

/**
 * `websocket` settings with `close_timeout`, the key the RFC 6455 engine
 * adds; cast so this file compiles before the key exists in config.ts.
 */
function websocketWith(
  settings: Partial<Config["websocket"]> = {},
): Partial<Config["websocket"]> {
  return { close_timeout: CLOSE_TIMEOUT, ...settings } as Partial<Config["websocket"]>;
}

// Frames as a client sends them (masked, FIN set unless told otherwise).
const text = (payload: Uint8Array | string, fin = true): FrameSpec => ({
  opcode: Opcode.TEXT,
  payload,
  fin,
});
const binary = (payload: Uint8Array | string, fin = true): FrameSpec => ({
  opcode: Opcode.BINARY,
  payload,
  fin,
});
const continuation = (payload: Uint8Array | string, fin = true): FrameSpec => ({
  opcode: Opcode.CONTINUATION,
  payload,
  fin,
});
const ping = (payload: Uint8Array | string = ""): FrameSpec => ({ opcode: Opcode.PING, payload });
const pong = (payload: Uint8Array | string = ""): FrameSpec => ({ opcode: Opcode.PONG, payload });
const close = (code?: number, reason: Uint8Array | string = ""): FrameSpec => ({
  opcode: Opcode.CLOSE,
  payload: closePayload(code, reason),
});
const bytes = (...values: number[]) => new Uint8Array(values);
const concatBytes = (...parts: Uint8Array[]) => new Uint8Array(parts.flatMap((p) => [...p]));

/** How a case puts its frames on the wire; a server must not care. */
type Delivery = "in one write" | "frame by frame" | "in 1-byte chunks";

async function deliver(ws: RawWebSocket, frames: FrameSpec[], how: Delivery): Promise<void> {
  if (how === "frame by frame") {
    for (const frame of frames) await ws.sendFrame(frame);
  } else {
    await ws.sendFrames(frames, { chunkSize: how === "in 1-byte chunks" ? 1 : undefined });
  }
}

const OPCODE_NAMES: Record<number, string> = {
  0: "continuation",
  1: "text",
  2: "binary",
  8: "close",
  9: "ping",
  10: "pong",
};

/**
 * A frame in one comparable line: opcode, payload (in full when short, else
 * its length and a hash) and any flag a server must not set, so a list of
 * frames can be compared with one `deepEqual` and read in its message.
 */
function describe(frame: Pick<FrameSpec, "opcode" | "payload"> | Frame | undefined): string {
  if (frame === undefined) return "end of connection";
  const { opcode, payload = "" } = frame;
  const data = typeof payload === "string" ? encoder.encode(payload) : payload;
  let line = OPCODE_NAMES[opcode] ?? `opcode ${opcode}`;
  if (data.length <= 40) {
    try {
      line += ` ${JSON.stringify(new TextDecoder("utf-8", { fatal: true }).decode(data))}`;
    } catch {
      line += ` <${[...data].map((b) => b.toString(16).padStart(2, "0")).join(" ")}>`;
    }
  } else {
    let hash = 0x811c9dc5; // FNV-1a
    for (const byte of data) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
    line += ` of ${data.length} bytes #${hash.toString(16)}`;
  }
  if ("masked" in frame && frame.masked) line += " (masked)";
  if ("rsv" in frame && frame.rsv) line += ` (rsv ${frame.rsv})`;
  return line;
}

/**
 * Runs `body` on a fresh raw client, then waits until the relay has let the
 * client go, so the next case starts on a relay with no one else in the room.
 */
async function withClient(relay: Relay, body: (ws: RawWebSocket) => Promise<void>): Promise<void> {
  const ws = await within(connectRaw(relay), "the upgrade", WAIT_MS);
  ws.timeoutMs = WAIT_MS;
  const left = nextEvent(relay.hub, "disconnect");
  try {
    await body(ws);
  } catch (error) {
    ws[Symbol.dispose]();
    await within(left, "the relay to drop the client", WAIT_MS).catch(() => {});
    throw error;
  }
  ws[Symbol.dispose]();
  await within(left, "the relay to drop the client", WAIT_MS);
}

/** Steps of `t` whose body runs on its own raw client of `relay` (see {@link withClient}). */
function rawSteps(
  t: Deno.TestContext,
  relay: Relay,
): (name: string, body: (ws: RawWebSocket) => Promise<void>) => Promise<void> {
  return async (name, body) => {
    await t.step(name, () => withClient(relay, body));
  };
}

/** Reads the next messages and control frames and compares them with `expected`, in order. */
async function expectFrames(ws: RawWebSocket, expected: FrameSpec[]): Promise<void> {
  const seen: string[] = [];
  for (let i = 0; i < expected.length; i++) seen.push(describe(await ws.readMessage()));
  assert.deepEqual(seen, expected.map(describe));
}

/**
 * Reads up to the server's close frame and checks its code is one of
 * `codes` (`undefined`: an empty close), after nothing but a prefix of
 * `mayPrecede` (Autobahn's OK and NON-STRICT outcomes). When the server
 * started the close, it is answered as a client would. Either way the
 * server must then end the TCP connection without sending anything more.
 */
async function expectClose(
  ws: RawWebSocket,
  codes: (number | undefined)[],
  { mayPrecede = [], answer = true }: { mayPrecede?: FrameSpec[]; answer?: boolean } = {},
): Promise<Close> {
  const received = await ws.readClose();
  assert.ok(received, `expected a close with ${codes.join(" or ")}; the connection just ended`);
  const before = received.frames.map(describe);
  assert.deepEqual(before, mayPrecede.map(describe).slice(0, before.length), "before the close");
  assert.ok(
    codes.includes(received.code),
    `expected close code ${codes.join(" or ")}, got ${received.code}`,
  );
  if (answer) {
    // The server may already have gone; its close is what counts.
    await ws.sendFrame(close(received.code)).catch(() => {});
  }
  assert.deepEqual((await ws.readToEnd()).map(describe), [], "after the close");
  return received;
}

/** The closing handshake every passing Autobahn case ends with: 1000, answered with 1000. */
async function closeNormally(ws: RawWebSocket): Promise<void> {
  await ws.sendFrame(close(1000));
  await expectClose(ws, [1000], { answer: false });
}

/**
 * Sends frames that break the protocol and expects the connection to be
 * failed with one of `codes`. Writes may fail once the server has given up.
 */
async function expectFailure(
  ws: RawWebSocket,
  frames: FrameSpec[],
  codes: number[],
  { how = "in one write", mayPrecede = [] }: { how?: Delivery; mayPrecede?: FrameSpec[] } = {},
): Promise<void> {
  await deliver(ws, frames, how).catch(() => {});
  await expectClose(ws, codes, { mayPrecede });
}

/** A payload of `length` bytes: ASCII for text, every byte value for binary. */
function payloadOf(opcode: number, length: number): Uint8Array {
  const pattern = opcode === Opcode.TEXT ? encoder.encode("BAsd7&jh23") : undefined;
  return Uint8Array.from(
    { length },
    (_, i) => pattern ? pattern[i % pattern.length] : (i * 7) & 0xff,
  );
}

const LENGTHS = [0, 125, 126, 127, 128, 65535, 65536];

// ---------------------------------------------------------------------------
// Opening handshake (RFC 6455 section 4.2)
// ---------------------------------------------------------------------------

/** Sends `request` on a new connection; a 101 is let go again before returning. */
async function upgradeOutcome(relay: Relay, request: UpgradeRequest): Promise<UpgradeResponse> {
  const registered = nextEvent(relay.hub, "connect");
  const left = nextEvent(relay.hub, "disconnect");
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.addr.port });
  let response: UpgradeResponse;
  try {
    ({ response } = await requestUpgrade(conn, request));
    if (response.status === 101) {
      await within(registered, "the hub to register the client", WAIT_MS);
    }
  } finally {
    try {
      conn.close();
    } catch {
      // Closed already by a timed-out read.
    }
  }
  if (response.status === 101) await within(left, "the relay to drop the client", WAIT_MS);
  return response;
}

function randomKey(): string {
  return btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
}

Deno.test("opening handshake", async (t) => {
  await using relay = await startTestRelay({ websocket: websocketWith() });

  await t.step(
    "a valid upgrade is answered 101 with the Sec-WebSocket-Accept of its key",
    async () => {
      const key = randomKey();
      const response = await upgradeOutcome(relay, { headers: { "Sec-WebSocket-Key": key } });
      assert.equal(response.status, 101);
      assert.equal(response.headers.get("sec-websocket-accept"), await acceptFor(key));
      assert.equal(response.headers.get("upgrade")?.toLowerCase(), "websocket");
      assert.ok(tokens(response.headers.get("connection")).includes("upgrade"));
      assert.equal(response.headers.get("sec-websocket-protocol"), null, "no subprotocol offered");
    },
  );

  const accepted: [string, UpgradeRequest][] = [
    ["Upgrade: WebSocket (any case)", { headers: { Upgrade: "WebSocket" } }],
    ["Connection: keep-alive, Upgrade (a token in a list)", {
      headers: { Connection: "keep-alive, Upgrade" },
    }],
    ["Connection: UPGRADE (any case)", { headers: { Connection: "UPGRADE" } }],
    ["Upgrade: h2c, websocket (a token in a list)", { headers: { Upgrade: "h2c, websocket" } }],
    ["a request written in 1-byte chunks", { chunkSize: 1 }],
  ];
  for (const [name, request] of accepted) {
    await t.step(`an upgrade with ${name} is accepted`, async () => {
      const key = randomKey();
      const response = await upgradeOutcome(relay, {
        ...request,
        headers: { ...request.headers, "Sec-WebSocket-Key": key },
      });
      assert.equal(response.statusLine.split(" ")[1], "101", response.statusLine);
      assert.equal(response.headers.get("sec-websocket-accept"), await acceptFor(key));
    });
  }

  await t.step("Sec-WebSocket-Version other than 13 is refused with 426 naming 13", async () => {
    for (const version of ["8", "12", "14"]) {
      const response = await upgradeOutcome(relay, {
        headers: { "Sec-WebSocket-Version": version },
      });
      assert.equal(response.status, 426, `version ${version}: ${response.statusLine}`);
      assert.equal(response.headers.get("sec-websocket-version"), "13");
    }
  });

  await t.step("a missing Sec-WebSocket-Version is refused (400 or 426)", async () => {
    const response = await upgradeOutcome(relay, { headers: { "Sec-WebSocket-Version": null } });
    assert.ok([400, 426].includes(response.status), response.statusLine);
  });

  const badKeys: [string, string | null][] = [
    ["missing", null],
    ["not base64 (abc)", "abc"],
    ["base64 of 15 bytes", btoa("x".repeat(15))],
    ["base64 of 17 bytes", btoa("x".repeat(17))],
    ["24 characters that are not base64", "!!!!!!!!!!!!!!!!!!!!!!=="],
  ];
  for (const [name, key] of badKeys) {
    await t.step(`a Sec-WebSocket-Key ${name} is refused with 400`, async () => {
      const response = await upgradeOutcome(relay, { headers: { "Sec-WebSocket-Key": key } });
      assert.equal(response.status, 400, response.statusLine);
    });
  }

  const notUpgrades: [string, UpgradeRequest][] = [
    ["POST", { method: "POST", headers: { "Content-Length": "0" } }],
    ["no Upgrade token in Connection", { headers: { Connection: "keep-alive" } }],
    ["no Upgrade header", { headers: { Upgrade: null } }],
  ];
  for (const [name, request] of notUpgrades) {
    await t.step(`a request with ${name} is not upgraded`, async () => {
      const response = await upgradeOutcome(relay, request);
      assert.ok(response.status >= 400, response.statusLine);
    });
  }
});

Deno.test("opening handshake: a bearer.<token> subprotocol alone is refused (400), beside another it is answered with the other", async () => {
  await using relay = await startTestRelay({
    auth: { mode: "api_key", api_keys: ["k1"] },
    websocket: websocketWith(),
  });
  // Browsers fail a connection whose offered subprotocol is not answered, and
  // answering with the token would put it in every proxy's log.
  const alone = await upgradeOutcome(relay, {
    headers: { "Sec-WebSocket-Protocol": "bearer.k1" },
  });
  assert.equal(alone.status, 400);
  assert.equal(alone.headers.get("sec-websocket-protocol"), null);
  const beside = await upgradeOutcome(relay, {
    headers: { "Sec-WebSocket-Protocol": "bearer.k1, relay" },
  });
  assert.equal(beside.status, 101);
  assert.equal(beside.headers.get("sec-websocket-protocol"), "relay");
});

function tokens(header: string | null): string[] {
  return (header ?? "").split(",").map((token) => token.trim().toLowerCase());
}

// ---------------------------------------------------------------------------
// Framing: messages (1.x), pings and pongs (2.x), reserved bits (3.x),
// reserved opcodes (4.x), masking
// ---------------------------------------------------------------------------

Deno.test("framing: text and binary messages", async (t) => {
  await using relay = await startTestRelay({ websocket: websocketWith() });
  const step = rawSteps(t, relay);

  for (const opcode of [Opcode.TEXT, Opcode.BINARY]) {
    for (const how of ["in one write", "in 1-byte chunks"] as const) {
      const kind = OPCODE_NAMES[opcode];
      await step(
        `${kind} messages of 0 to 65536 bytes sent ${how} are echoed intact`,
        async (ws) => {
          for (const length of LENGTHS) {
            const message = { opcode, payload: payloadOf(opcode, length) };
            await deliver(ws, [message], how);
            await expectFrames(ws, [message]);
          }
          await closeNormally(ws);
        },
      );
    }
  }

  await step("14 messages in one write are echoed intact and in order", async (ws) => {
    const messages = [Opcode.TEXT, Opcode.BINARY].flatMap((opcode) =>
      LENGTHS.map((length) => ({ opcode, payload: payloadOf(opcode, length) }))
    );
    await ws.sendFrames(messages);
    await expectFrames(ws, messages);
    await closeNormally(ws);
  });
});

Deno.test("framing: pings and pongs", async (t) => {
  await using relay = await startTestRelay({ websocket: websocketWith() });
  const step = rawSteps(t, relay);

  const pings: [string, Uint8Array | string, Delivery][] = [
    ["an empty payload", "", "in one write"],
    ["a 125-byte payload", new Uint8Array(125).fill(0xfe), "in one write"],
    ["a binary payload", bytes(0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff), "in one write"],
    [
      "a 125-byte payload sent in 1-byte chunks",
      new Uint8Array(125).fill(0xfe),
      "in 1-byte chunks",
    ],
  ];
  for (const [name, payload, how] of pings) {
    await step(`a ping with ${name} is answered with a pong of identical payload`, async (ws) => {
      await deliver(ws, [ping(payload)], how);
      await expectFrames(ws, [pong(payload)]);
      await closeNormally(ws);
    });
  }

  for (const how of ["in one write", "in 1-byte chunks"] as const) {
    await step(`10 pings sent ${how} are answered with 10 pongs in order`, async (ws) => {
      const payloads = Array.from({ length: 10 }, (_, i) => `payload-${i}`);
      await deliver(ws, payloads.map((payload) => ping(payload)), how);
      await expectFrames(ws, payloads.map((payload) => pong(payload)));
      await closeNormally(ws);
    });
  }

  await step("an unsolicited pong is ignored and the connection stays usable", async (ws) => {
    await ws.sendFrames([pong(), pong("unsolicited"), ping("solicited"), text("still here")]);
    await expectFrames(ws, [pong("solicited"), text("still here")]);
    await closeNormally(ws);
  });

  for (const opcode of [Opcode.PING, Opcode.PONG, Opcode.CLOSE]) {
    await step(`a ${OPCODE_NAMES[opcode]} of 126 bytes is a protocol error (1002)`, async (ws) => {
      const payload = opcode === Opcode.CLOSE
        ? closePayload(1000, "*".repeat(124))
        : new Uint8Array(126).fill(0xfe);
      await expectFailure(ws, [{ opcode, payload }], [1002]);
    });
  }
});

Deno.test("framing: reserved bits, reserved opcodes and masking", async (t) => {
  await using relay = await startTestRelay({ websocket: websocketWith() });
  const step = rawSteps(t, relay);

  // Autobahn 3.1-3.7: a valid message first (its echo may or may not come),
  // then the bad frame, then a ping that must not be answered.
  const rsvCases: [number, number, Delivery][] = [
    [Opcode.TEXT, 1, "in one write"],
    [Opcode.TEXT, 2, "in one write"],
    [Opcode.TEXT, 3, "frame by frame"],
    [Opcode.TEXT, 4, "in 1-byte chunks"],
    [Opcode.BINARY, 5, "in one write"],
    [Opcode.PING, 6, "in one write"],
    [Opcode.CLOSE, 7, "in one write"],
  ];
  for (const [opcode, rsv, how] of rsvCases) {
    await step(
      `a ${OPCODE_NAMES[opcode]} frame with RSV=${rsv} is a protocol error (1002)`,
      async (ws) => {
        const bad = {
          opcode,
          rsv,
          payload: opcode === Opcode.CLOSE ? closePayload(1000) : "bad",
        };
        await expectFailure(ws, [text("Hello, world!"), bad, ping()], [1002], {
          how,
          mayPrecede: [text("Hello, world!")],
        });
      },
    );
  }

  for (const opcode of [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]) {
    await step(`reserved opcode ${opcode} is a protocol error (1002)`, async (ws) => {
      const frames = [text("Hello, world!"), { opcode, payload: "reserved" }, ping()];
      await expectFailure(ws, frames, [1002], {
        how: opcode === 7 || opcode === 15 ? "in 1-byte chunks" : "in one write",
        mayPrecede: [text("Hello, world!")],
      });
    });
  }

  for (const frame of [text("in the clear"), binary("in the clear"), ping("in the clear")]) {
    await step(
      `an unmasked ${OPCODE_NAMES[frame.opcode]} frame is a protocol error (1002)`,
      async (ws) => {
        await expectFailure(ws, [{ ...frame, mask: false }], [1002]);
      },
    );
  }
});

// ---------------------------------------------------------------------------
// Fragmentation (5.x)
// ---------------------------------------------------------------------------

Deno.test("fragmentation", async (t) => {
  await using relay = await startTestRelay({ websocket: websocketWith() });
  const step = rawSteps(t, relay);

  for (const opcode of [Opcode.PING, Opcode.PONG, Opcode.CLOSE]) {
    await step(`a fragmented ${OPCODE_NAMES[opcode]} is a protocol error (1002)`, async (ws) => {
      const first = opcode === Opcode.CLOSE ? closePayload(1000) : "fragment1";
      const frames = [{ opcode, payload: first, fin: false }, continuation("fragment2")];
      await expectFailure(ws, frames, [1002]);
    });
  }

  for (const opcode of [Opcode.TEXT, Opcode.BINARY]) {
    for (const how of ["in one write", "frame by frame", "in 1-byte chunks"] as const) {
      await step(
        `a ${OPCODE_NAMES[opcode]} message in 2 fragments sent ${how} is echoed whole`,
        async (ws) => {
          await deliver(ws, [
            { opcode, payload: "fragment1", fin: false },
            continuation("fragment2"),
          ], how);
          await expectFrames(ws, [{ opcode, payload: "fragment1fragment2" }]);
          await closeNormally(ws);
        },
      );
    }
  }

  await step("a message of many fragments, some empty, is echoed whole", async (ws) => {
    await ws.sendFrames([text("", false), continuation("", false), continuation("")]);
    await ws.sendFrames([
      text("", false),
      continuation("middle frame payload", false),
      continuation("", false),
      continuation(payloadOf(Opcode.TEXT, 70000), false),
      continuation("end"),
    ]);
    const long = new TextDecoder().decode(payloadOf(Opcode.TEXT, 70000));
    await expectFrames(ws, [text(""), text(`middle frame payload${long}end`)]);
    await closeNormally(ws);
  });

  for (const how of ["in one write", "frame by frame", "in 1-byte chunks"] as const) {
    await step(
      `a ping between fragments sent ${how} is answered, then the message echoed`,
      async (ws) => {
        await deliver(ws, [
          text("fragment1", false),
          ping("ping payload"),
          continuation("fragment2"),
        ], how);
        await expectFrames(ws, [pong("ping payload"), text("fragment1fragment2")]);
        await closeNormally(ws);
      },
    );
  }

  await step("pings between fragments are answered before the message is complete", async (ws) => {
    // Autobahn 5.19: the first pong must come while the message is still open.
    await ws.sendFrames([
      text("fragment1", false),
      continuation("fragment2", false),
      ping("pongme 1!"),
    ]);
    await expectFrames(ws, [pong("pongme 1!")]);
    await ws.sendFrames([
      continuation("fragment3", false),
      continuation("fragment4", false),
      ping("pongme 2!"),
      continuation("fragment5"),
    ]);
    await expectFrames(ws, [
      pong("pongme 2!"),
      text("fragment1fragment2fragment3fragment4fragment5"),
    ]);
    await closeNormally(ws);
  });

  for (const fin of [true, false]) {
    for (const how of ["in one write", "in 1-byte chunks"] as const) {
      await step(
        `a continuation (FIN=${fin}) with no message started is a protocol error (1002), sent ${how}`,
        async (ws) => {
          await expectFailure(
            ws,
            [continuation("non-continuation payload", fin), text("Hello, world!")],
            [1002],
            { how },
          );
        },
      );
    }
  }

  await step(
    "a continuation after a finished fragmented message is a protocol error (1002)",
    async (ws) => {
      // Autobahn 5.15: the first message may be echoed (OK) or not (NON-STRICT).
      const frames = [
        text("fragment1", false),
        continuation("fragment2"),
        continuation("fragment3", false),
        text("fragment4"),
      ];
      await expectFailure(ws, frames, [1002], { mayPrecede: [text("fragment1fragment2")] });
    },
  );

  for (const fin of [true, false]) {
    await step(
      `a continuation (FIN=${fin}) before a fragmented message is a protocol error (1002)`,
      async (ws) => {
        // Autobahn 5.16 and 5.17.
        const round = [
          continuation("fragment1", fin),
          text("fragment2", false),
          continuation("fragment3"),
        ];
        await expectFailure(ws, [...round, ...round], [1002]);
      },
    );
  }

  for (const opcode of [Opcode.TEXT, Opcode.BINARY]) {
    await step(
      `a new ${OPCODE_NAMES[opcode]} frame inside a fragmented message is a protocol error (1002)`,
      async (ws) => {
        const frames = [text("fragment1", false), { opcode, payload: "fragment2" }];
        await expectFailure(ws, frames, [1002]);
      },
    );
  }
});

// ---------------------------------------------------------------------------
// UTF-8 (6.x)
// ---------------------------------------------------------------------------

/** Valid text with 2-, 3- and 4-byte characters, to split anywhere. */
const MULTI_BYTE = encoder.encode("κόσμε€𝄞");

/**
 * Sends `fragments` as one text message, each but the last followed by a
 * ping: a server that fails fast closes instead of answering, one that
 * checks at the end answers and gets the end. Both must close with 1007.
 */
async function expectInvalidText(ws: RawWebSocket, fragments: Uint8Array[]): Promise<void> {
  for (const [i, payload] of fragments.entries()) {
    const last = i === fragments.length - 1;
    const opcode = i === 0 ? Opcode.TEXT : Opcode.CONTINUATION;
    await ws.sendFrame({ opcode, payload, fin: last }).catch(() => {});
    if (last) break;
    await ws.sendFrame(ping(`after fragment ${i + 1}`)).catch(() => {});
    const answer = await ws.readMessage();
    if (answer?.opcode === Opcode.PONG) {
      assert.equal(describe(answer), describe(pong(`after fragment ${i + 1}`)));
      continue;
    }
    assert.equal(
      answer?.opcode,
      Opcode.CLOSE,
      `expected a pong or a close, got ${describe(answer)}`,
    );
    const code = (answer.payload[0] << 8) | answer.payload[1];
    assert.equal(code, 1007, `failed fast, but with ${code}`);
    await ws.sendFrame(close(code)).catch(() => {});
    assert.deepEqual((await ws.readToEnd()).map(describe), [], "after the close");
    return;
  }
  await expectClose(ws, [1007]);
}

Deno.test("UTF-8", async (t) => {
  await using relay = await startTestRelay({ websocket: websocketWith() });
  const step = rawSteps(t, relay);

  await step("valid text with multi-byte characters is echoed intact", async (ws) => {
    const samples = [
      "Hello-µ@ßöäüàá-UTF-8!!",
      "κόσμε",
      "\u0000\u007f\u0080\u07ff\u0800\ud7ff\ue000\ufffd\uffff\u{10000}\u{10ffff}",
      "\ufeff\ufffe noncharacters and a BOM are valid",
      "😀🎉 four-byte emoji",
    ];
    for (const sample of samples) {
      await ws.send(Opcode.TEXT, sample);
      await expectFrames(ws, [text(sample)]);
    }
    await closeNormally(ws);
  });

  await step(
    "valid text split into 2 fragments at every byte boundary is echoed whole",
    async (ws) => {
      for (let at = 1; at < MULTI_BYTE.length; at++) {
        await ws.sendFrames([
          text(MULTI_BYTE.subarray(0, at), false),
          continuation(MULTI_BYTE.subarray(at)),
        ]);
        await expectFrames(ws, [text(MULTI_BYTE)]);
      }
      await closeNormally(ws);
    },
  );

  await step("valid text in 1-byte fragments is echoed whole", async (ws) => {
    const frames = [...MULTI_BYTE].map((byte, i) => ({
      opcode: i === 0 ? Opcode.TEXT : Opcode.CONTINUATION,
      payload: bytes(byte),
      fin: i === MULTI_BYTE.length - 1,
    }));
    await ws.sendFrames(frames);
    await expectFrames(ws, [text(MULTI_BYTE)]);
    await closeNormally(ws);
  });

  await step("binary frames are not checked for UTF-8", async (ws) => {
    await ws.send(Opcode.BINARY, bytes(0xc0, 0xaf, 0xed, 0xa0, 0x80, 0xff));
    await expectFrames(ws, [binary(bytes(0xc0, 0xaf, 0xed, 0xa0, 0x80, 0xff))]);
    await closeNormally(ws);
  });

  const invalid: [string, Uint8Array][] = [
    ["an overlong '/' (C0 AF)", bytes(0xc0, 0xaf)],
    ["an overlong 3-byte form (E0 80 AF)", bytes(0xe0, 0x80, 0xaf)],
    ["an overlong 4-byte form (F0 80 80 AF)", bytes(0xf0, 0x80, 0x80, 0xaf)],
    ["a surrogate U+D800 (ED A0 80)", bytes(0xed, 0xa0, 0x80)],
    ["a surrogate U+DFFF (ED BF BF)", bytes(0xed, 0xbf, 0xbf)],
    ["a surrogate pair (ED A0 80 ED B0 80)", bytes(0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80)],
    ["a code point above U+10FFFF (F4 90 80 80)", bytes(0xf4, 0x90, 0x80, 0x80)],
    ["a 5-byte form (F8 88 80 80 80)", bytes(0xf8, 0x88, 0x80, 0x80, 0x80)],
    ["the byte FE", bytes(0xfe)],
    ["the byte FF", bytes(0xff)],
    ["a lone continuation byte (80)", bytes(0x80)],
    ["a lead byte followed by ASCII (C2 41)", bytes(0xc2, 0x41)],
  ];
  for (const [name, sequence] of invalid) {
    await step(`text with ${name} is closed with 1007`, async (ws) => {
      const payload = concatBytes(encoder.encode("κόσμε"), sequence, encoder.encode("edited"));
      await expectFailure(ws, [text(payload)], [1007]);
    });
  }

  await step(
    "text truncated inside a character at the message end is closed with 1007",
    async (ws) => {
      const payload = concatBytes(encoder.encode("κόσμε"), bytes(0xe1, 0xbd));
      await expectFailure(ws, [text(payload)], [1007]);
    },
  );

  const fragmented: [string, Uint8Array[]][] = [
    ["in the first fragment", [bytes(0xc0, 0xaf), encoder.encode("edited")]],
    ["in the second fragment (Autobahn 6.4.1)", [
      encoder.encode("κόσμε"),
      bytes(0xf4, 0x90, 0x80, 0x80),
      encoder.encode("edited"),
    ]],
    ["split across fragments (ED | A0 80)", [
      concatBytes(encoder.encode("κ"), bytes(0xed)),
      bytes(0xa0, 0x80),
    ]],
    ["truncated at the end of the last fragment", [encoder.encode("κόσμε"), bytes(0xce)]],
    [
      "in 1-byte fragments",
      [...concatBytes(encoder.encode("κ"), bytes(0xed, 0xa0, 0x80), encoder.encode("edited"))].map((
        b,
      ) => bytes(b)),
    ],
  ];
  for (const [name, fragments] of fragmented) {
    await step(
      `invalid UTF-8 ${name} is closed with 1007 (fail fast or at message end)`,
      (ws) => expectInvalidText(ws, fragments),
    );
  }
});

// ---------------------------------------------------------------------------
// Closing (7.x)
// ---------------------------------------------------------------------------

Deno.test("closing handshake", async (t) => {
  await using relay = await startTestRelay({ websocket: websocketWith() });
  const step = rawSteps(t, relay);

  await step(
    "a close with 1000 and a reason is answered with 1000, then the TCP connection ends",
    async (ws) => {
      await ws.sendFrame(close(1000, "bye"));
      await expectClose(ws, [1000], { answer: false });
    },
  );

  await step("an empty close is answered with an empty close or 1000", async (ws) => {
    await ws.sendFrame(close());
    await expectClose(ws, [undefined, 1000], { answer: false });
  });

  await step(
    "a close of 125 bytes (1000 and a 123-byte reason) is answered with 1000",
    async (ws) => {
      await ws.sendFrame(close(1000, "*".repeat(123)));
      await expectClose(ws, [1000], { answer: false });
    },
  );

  await step("a close with a 1-byte payload is a protocol error (1002)", async (ws) => {
    await ws.sendFrame({ opcode: Opcode.CLOSE, payload: "a" });
    await expectClose(ws, [1002], { answer: false });
  });

  for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]) {
    await step(`a close with code ${code} is a protocol error (1002)`, async (ws) => {
      await ws.sendFrame(close(code));
      await expectClose(ws, [1002], { answer: false });
    });
  }

  const registered = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014];
  for (const code of [...registered, 3000, 3999, 4000, 4999]) {
    // Autobahn 7.7.x accepts the code echoed or 1000.
    await step(`a close with valid code ${code} is answered with that code or 1000`, async (ws) => {
      await ws.sendFrame(close(code));
      await expectClose(ws, [code, 1000], { answer: false });
    });
  }

  await step("a close reason of invalid UTF-8 is closed with 1007 (or 1002)", async (ws) => {
    const reason = concatBytes(
      encoder.encode("κόσμε"),
      bytes(0xed, 0xa0, 0x80),
      encoder.encode("edited"),
    );
    await ws.sendFrame(close(1000, reason));
    await expectClose(ws, [1007, 1002], { answer: false });
  });

  await step(
    "a message then a close: the message is echoed, then the close answered",
    async (ws) => {
      await ws.sendFrames([text("Hello World!"), close(1000)]);
      await expectClose(ws, [1000], { answer: false, mayPrecede: [text("Hello World!")] });
    },
  );

  const afterClose: [string, FrameSpec[]][] = [
    ["a second close is ignored", [close(1000), close()]],
    ["a ping after a close is not answered", [close(1000), ping("late")]],
    ["a text after a close is not echoed", [close(1000), text("Hello World!")]],
    ["a fragment after a close does not complete its message", [
      text("fragment1", false),
      close(1000),
      continuation("fragment2"),
    ]],
  ];
  for (const [name, frames] of afterClose) {
    await step(name, async (ws) => {
      await ws.sendFrames(frames);
      await expectClose(ws, [1000], { answer: false });
    });
  }
});

// ---------------------------------------------------------------------------
// Limits (9.x style, with a small websocket.max_message_bytes)
// ---------------------------------------------------------------------------

Deno.test("message size limit", async (t) => {
  const limit = 1000;
  await using relay = await startTestRelay({
    websocket: websocketWith({ max_message_bytes: limit }),
  });
  const step = rawSteps(t, relay);

  await step(
    "a message of exactly max_message_bytes is echoed, whole or in fragments",
    async (ws) => {
      const payload = payloadOf(Opcode.TEXT, limit);
      await ws.send(Opcode.TEXT, payload);
      await expectFrames(ws, [text(payload)]);
      await ws.sendFrames([
        binary(payload.subarray(0, 600), false),
        continuation(payload.subarray(600)),
      ]);
      await expectFrames(ws, [binary(payload)]);
      await closeNormally(ws);
    },
  );

  for (const opcode of [Opcode.TEXT, Opcode.BINARY]) {
    const kind = OPCODE_NAMES[opcode];
    await step(
      `a ${kind} header announcing max_message_bytes + 1 is closed with 1009 before its payload`,
      async (ws) => {
        // Only the header goes out: the close must not wait for the payload.
        await ws.sendFrame({ opcode, length: limit + 1 });
        await expectClose(ws, [1009]);
      },
    );
  }

  await step(
    "fragments adding up to more than max_message_bytes are closed with 1009",
    async (ws) => {
      const half = payloadOf(Opcode.TEXT, 600);
      await expectFailure(ws, [text(half, false), continuation(half)], [1009]);
    },
  );

  await step("a header announcing 60 MiB is closed with 1009 without the payload", async (ws) => {
    const rssBefore = Deno.memoryUsage().rss;
    await ws.sendFrame({ opcode: Opcode.BINARY, length: 60 * 2 ** 20 });
    await expectClose(ws, [1009]);
    // Refused from the header: no buffer of the announced size was ever made.
    const grownMiB = (Deno.memoryUsage().rss - rssBefore) / 2 ** 20;
    assert.ok(grownMiB < 30, `the server grew by ${grownMiB.toFixed(1)} MiB`);
  });

  await step(
    "a 64-bit length with its most significant bit set is refused (1002 or 1009)",
    async (ws) => {
      // RFC 6455 section 5.2: that bit must be 0.
      await ws.sendFrame({ opcode: Opcode.BINARY, length: 2n ** 63n + 5n });
      await expectClose(ws, [1002, 1009]);
    },
  );
});

// ---------------------------------------------------------------------------
// Counting and the relay's own deadlines
// ---------------------------------------------------------------------------

Deno.test("protocol errors are counted as protocol_error disconnections", async () => {
  await using relay = await startTestRelay({ websocket: websocketWith() });
  await withClient(relay, (ws) => expectFailure(ws, [{ ...text("bad"), rsv: 4 }], [1002]));
  await withClient(relay, (ws) => expectFailure(ws, [text(bytes(0xc0, 0xaf))], [1007]));
  const samples = await scrape(relay);
  assert.equal(samples.get('websocket_disconnections_total{reason="protocol_error"}'), 2);
});

Deno.test("a client that stops reading is evicted and its TCP connection released within close_timeout", async () => {
  // Without echo only the stalled client receives the flood.
  await using relay = await startTestRelay({
    websocket: websocketWith({ send_buffer_bytes: 65536, echo: false }),
  });
  using flooder = await within(connectRaw(relay), "the flooder to connect", WAIT_MS);
  using stalled = await within(connectRaw(relay), "the stalled client to connect", WAIT_MS);
  const evicted = nextEvent(relay.hub, "disconnect");
  let gone = false;
  evicted.then(() => gone = true);

  // Each write waits for the kernel to take it, so the flood goes at the
  // relay's pace; 64 MiB in all is far past any socket buffers. Messages
  // under the budget, so only falling behind can exceed it.
  const frame = encodeFrame(binary(new Uint8Array(32 * 1024)));
  const flood = async () => {
    for (let i = 0; i < 2048 && !gone; i++) await flooder.write(frame);
  };
  await within(flood(), "the relay to take the flood", 10_000);
  const { detail } = await within(evicted, "the stalled client to be evicted", WAIT_MS);
  assert.equal(detail.reason, "slow_consumer");

  // The stalled client never answers a close; the server must let go anyway.
  // The deadline is close_timeout plus slack, below the 5s default.
  stalled.timeoutMs = 4000;
  const frames = await stalled.readToEnd();
  const closeAt = frames.findIndex((frame) => frame.opcode === Opcode.CLOSE);
  if (closeAt !== -1) {
    const { payload } = frames[closeAt];
    assert.equal((payload[0] << 8) | payload[1], 1013);
    assert.equal(closeAt, frames.length - 1, "nothing may follow the close frame");
  }
  assert.equal(relay.hub.size, 1, "the flooder stays");
});

Deno.test("shutdown sends 1001 and releases the TCP connection of a peer that never answers", async () => {
  await using relay = await startTestRelay({
    server: { shutdown_timeout: "30s" },
    websocket: websocketWith(),
  });
  using ws = await within(connectRaw(relay), "the upgrade", WAIT_MS);
  const shutdown = relay.shutdown();
  ws.timeoutMs = 4000; // close_timeout plus slack: far below shutdown_timeout
  const received = await ws.readClose();
  assert.equal(received?.code, 1001);
  assert.deepEqual(received.frames.map(describe), [], "before the close");
  assert.deepEqual((await ws.readToEnd()).map(describe), [], "after the close");
  // With its last client gone the relay need not wait out shutdown_timeout.
  await within(shutdown, "the shutdown to finish", WAIT_MS);
});

Deno.test("idle_timeout disconnects a client that does not answer pings and keeps one that does", async () => {
  await using relay = await startTestRelay({ websocket: websocketWith({ idle_timeout: "1s" }) });
  // Connected first, so by the time the silent client is dropped this one
  // has been idle as long and has had its pings (Deno's client answers them).
  const alive = await within(TestClient.connect(relay), "the answering client to connect", WAIT_MS);
  using silent = await within(connectRaw(relay), "the silent client to connect", WAIT_MS);
  const gone = nextEvent(relay.hub, "disconnect");
  const first = await silent.read();
  assert.equal(first?.opcode, Opcode.PING, `expected a ping, got ${describe(first)}`);
  const { detail } = await within(gone, "the silent client to be dropped", WAIT_MS);
  assert.equal(detail.reason, "idle_timeout");
  assert.equal(relay.hub.size, 1);
  alive.send("still here");
  assert.equal(await within(alive.next(), "the answering client's echo", WAIT_MS), "still here");
  await alive.close();
});
