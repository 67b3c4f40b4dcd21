/**
 * `websocket.protocol: go-ws` on one relay: every envelope a go-ws client
 * sees (silent subscribe, error, pong, messages), go-ws's validation rules,
 * the frames it ignores, the publish API's go-ws bodies, `hub.publish` and
 * `GoWsHub`, and the config that goes with it. The Redis bridge is
 * `gows_bridge_test.ts`; a Go client is `gows_client_test.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { SignJWT } from "jose";
import { parseConfig } from "../config.ts";
import { decodeGoWsMessage, isRfc3339 } from "../core/gows.ts";
import { GoWsError, GoWsHub } from "../core/gows_hub.ts";
import { describeDeployment } from "../startup.ts";
import { nextEvent, startTestRelay, TestClient } from "./helpers.ts";
import {
  assertQuiet,
  goWsClient,
  nextGoWs,
  parseGoWs,
  publish,
  startGoWsRelay,
  untimed,
} from "./gows.ts";

const json = JSON.stringify;

Deno.test("go-ws: subscribe is silent and a ping gets a pong with an RFC 3339 timestamp", async () => {
  await using relay = await startGoWsRelay();
  const client = await TestClient.connect(relay);
  client.send(json({ type: "subscribe", channel: "process:abc" }));
  client.send(json({ type: "subscribe", data: "events" })); // the channel in data, as older callers
  client.send(json({ type: "ping" }));
  const pong = await nextGoWs(client);
  assert.deepEqual(Object.keys(pong), ["type", "timestamp"]);
  assert.equal(pong.type, "pong");
  assert.ok(Math.abs(Date.parse(pong.timestamp) - Date.now()) < 60_000, pong.timestamp);
  await publish(relay, [
    { type: "process_output", channel: "process:abc", data: "line\n" },
    { channel: "events", data: 1 },
  ]);
  assert.deepEqual(untimed(await nextGoWs(client)), {
    type: "process_output",
    channel: "process:abc",
    processId: "abc",
    data: "line\n",
  });
  assert.deepEqual(untimed(await nextGoWs(client)), { type: "event", channel: "events", data: 1 });
  await client.close();
});

Deno.test("go-ws: a refused subscribe gets go-ws's error envelope with go-ws's reason", async () => {
  await using relay = await startGoWsRelay();
  const client = await goWsClient(relay);
  const cases = [
    [{ type: "subscribe", channel: "has space" }, "Subscribe: invalid channel name"],
    [{ type: "subscribe", channel: "x".repeat(257) }, "Subscribe: invalid channel name"],
    [{ type: "subscribe", data: "ünïcode" }, "Subscribe: invalid channel name"],
    [{ type: "subscribe", channel: "process:" }, "Subscribe: invalid process ID"],
    [{ type: "subscribe", channel: "process:a:b" }, "Subscribe: invalid process ID"],
    [{ type: "subscribe", channel: `process:${"p".repeat(129)}` }, "Subscribe: invalid process ID"],
  ] as const;
  for (const [frame, reason] of cases) {
    client.send(json(frame));
    const error = await nextGoWs(client);
    assert.deepEqual(Object.keys(error), ["type", "data", "timestamp"]);
    assert.deepEqual(untimed(error), { type: "error", data: reason });
  }
  // The longest names go-ws accepts are accepted.
  client.send(json({ type: "subscribe", channel: "c".repeat(256) }));
  client.send(json({ type: "subscribe", channel: `process:${"p".repeat(128)}` }));
  await assertQuiet(client);
  assert.equal(relay.hub.stats.refused.bad_channel, cases.length);
  await client.close();
});

Deno.test("go-ws: frames go-ws ignores get nothing back and are counted", async () => {
  await using relay = await startGoWsRelay();
  const client = await goWsClient(relay, ["news"]);
  const ignored = [
    "not json",
    "[1,2]",
    json({ type: 1 }),
    json({ type: "subscribe", channel: 5 }),
    json({ type: "ping", timestamp: "yesterday" }),
    json({ type: "ping", timestamp: 1700000000 }),
    json({ type: "publish", channel: "news", data: "go-ws clients cannot publish" }),
    json({ type: "message" }),
    json({ type: "PING" }),
    "null",
    json({ type: "subscribe" }),
    json({ type: "subscribe", data: { not: "a string" } }),
    json({ type: "unsubscribe", channel: "bad name" }),
  ];
  for (const frame of ignored) client.send(frame);
  await assertQuiet(client);
  const { refused } = relay.hub.stats;
  assert.deepEqual(
    [refused.bad_json, refused.unknown_type, refused.bad_channel],
    [6, 4, 3],
    JSON.stringify(refused),
  );
  // Still subscribed to news, and nothing of the publish attempt went out.
  await publish(relay, { channel: "news", data: "from the server" });
  assert.equal((await nextGoWs(client)).data, "from the server");
  await client.close();
});

Deno.test("go-ws: fields are read as Go reads them (any key case, RFC 3339, binary frames)", async () => {
  await using relay = await startGoWsRelay();
  const client = await goWsClient(relay);
  client.send(json({ Type: "subscribe", CHANNEL: "a" }));
  client.send(new TextEncoder().encode(json({ type: "subscribe", channel: "b" })));
  client.send(
    json({ type: "subscribe", channel: "c", timestamp: "2026-01-02T15:04:05.123456789+01:00" }),
  );
  client.send(json({ type: "subscribe", channel: "d", processId: null, data: null }));
  await assertQuiet(client);
  await publish(relay, ["a", "b", "c", "d"].map((channel) => ({ channel, data: channel })));
  for (const channel of ["a", "b", "c", "d"]) assert.equal((await nextGoWs(client)).data, channel);
  // And as Go, these fail as a whole.
  assert.equal(decodeGoWsMessage({ type: "ping", timestamp: "2026-02-30T00:00:00Z" }), undefined);
  assert.equal(decodeGoWsMessage({ type: "ping", processId: 7 }), undefined);
  assert.equal(decodeGoWsMessage({ type: "ping", timestamp: "2026-01-02 15:04:05Z" }), undefined);
  assert.deepEqual(decodeGoWsMessage({ type: "ping", Type: "pong", extra: 1 })?.type, "pong");
  for (const good of ["2026-01-02T15:04:05Z", "2024-02-29T23:59:59.5-07:00"]) {
    assert.ok(isRfc3339(good), good);
  }
  for (const bad of ["2026-02-29T00:00:00Z", "2026-01-02T24:00:00Z", "2026-01-02T15:04:60Z"]) {
    assert.ok(!isRfc3339(bad), bad);
  }
  await client.close();
});

Deno.test("go-ws: unsubscribe is silent and stops the channel, not broadcasts", async () => {
  await using relay = await startGoWsRelay();
  const client = await goWsClient(relay, ["a", "b"]);
  client.send(json({ type: "unsubscribe", channel: "a" }));
  client.send(json({ type: "unsubscribe", data: "b" }));
  client.send(json({ type: "unsubscribe", channel: "never-subscribed" }));
  await assertQuiet(client);
  const response = await publish(relay, [
    { channel: "a", data: 1 },
    { channel: "b", data: 2 },
    { data: "to everyone" },
  ]);
  assert.deepEqual(await response.json(), { messages: 3, delivered: 1 });
  assert.deepEqual(untimed(await nextGoWs(client)), { type: "event", data: "to everyone" });
  await assertQuiet(client);
  await client.close();
});

Deno.test("go-ws: a broadcast reaches every client once, a channel message its subscribers once", async () => {
  await using relay = await startGoWsRelay();
  const both = await goWsClient(relay, ["process:p1", "process:p1"]);
  const none = await goWsClient(relay);
  const response = await publish(relay, [
    { type: "process_output", channel: "process:p1", data: "out" },
    { type: "event", data: { event: "deployed" } },
  ]);
  assert.deepEqual(await response.json(), { messages: 2, delivered: 3 });
  assert.equal((await nextGoWs(both)).data, "out");
  assert.deepEqual((await nextGoWs(both)).data, { event: "deployed" });
  assert.deepEqual((await nextGoWs(none)).data, { event: "deployed" });
  for (const client of [both, none]) {
    await assertQuiet(client);
    await client.close();
  }
});

Deno.test("go-ws: a subscribe past go-ws's 1024 per client gets subscription limit exceeded", async () => {
  await using relay = await startGoWsRelay();
  const client = await TestClient.connect(relay);
  for (let i = 0; i < 1024; i++) client.send(json({ type: "subscribe", channel: `c${i}` }));
  client.send(json({ type: "subscribe", channel: "c0" })); // already held: fine
  client.send(json({ type: "subscribe", channel: "one-too-many" }));
  assert.deepEqual(untimed(await nextGoWs(client)), {
    type: "error",
    data: "subscription limit exceeded",
  });
  await assertQuiet(client);
  assert.equal(relay.hub.stats.refused.too_many_channels, 1);
  // Unsubscribing frees a place.
  client.send(json({ type: "unsubscribe", channel: "c5" }));
  client.send(json({ type: "subscribe", channel: "one-too-many" }));
  await assertQuiet(client);
  await publish(relay, { channel: "one-too-many", data: "in" });
  assert.equal((await nextGoWs(client)).data, "in");
  await client.close();
});

Deno.test("go-ws: a token's channels claim refuses as go-ws's authoriser does", async () => {
  const secret = "a-secret-of-at-least-32-bytes-long!!";
  await using relay = await startGoWsRelay({
    auth: {
      mode: "jwt",
      jwt: {
        algorithm: "HS256",
        secret,
        public_key_file: "",
        issuer: "",
        audience: "",
        require_exp: true,
        leeway: "30s",
      },
    },
  });
  const token = await new SignJWT({ channels: ["process:*"] })
    .setProtectedHeader({ alg: "HS256" }).setExpirationTime("1h")
    .sign(new TextEncoder().encode(secret));
  const registered = nextEvent(relay.hub, "connect");
  const client = await TestClient.open(`${relay.url}?token=${token}`);
  await registered;
  client.send(json({ type: "subscribe", channel: "process:mine" }));
  client.send(json({ type: "subscribe", channel: "admin" }));
  assert.deepEqual(untimed(await nextGoWs(client)), {
    type: "error",
    data: "Subscribe: subscription unauthorised",
  });
  await assertQuiet(client);
  assert.equal(relay.hub.stats.refused.forbidden, 1);
  await client.close();
});

Deno.test("go-ws: over rate_limit a client is closed with 1008 (go-ws has no error for it)", async () => {
  await using relay = await startGoWsRelay({
    websocket: { protocol: "go-ws", rate_limit: { messages_per_second: 1, burst: 2 } },
  });
  const client = await TestClient.connect(relay);
  for (let i = 0; i < 4; i++) client.send(json({ type: "subscribe", channel: "c" }));
  assert.equal((await client.closed).code, 1008);
});

Deno.test("go-ws publish API: go-ws Message bodies, the relay's defaults filled in", async () => {
  await using relay = await startGoWsRelay();
  const client = await goWsClient(relay, ["process:abc", "news"]);
  const single = await publish(relay, {
    type: "process_status",
    channel: "process:abc",
    data: { exitCode: 1, status: "exited" },
  });
  assert.equal(single.status, 202);
  assert.deepEqual(await single.json(), { messages: 1, delivered: 1 });
  const status = await nextGoWs(client);
  assert.deepEqual(untimed(status), {
    type: "process_status",
    channel: "process:abc",
    processId: "abc",
    data: { exitCode: 1, status: "exited" },
  });
  assert.ok(Math.abs(Date.parse(status.timestamp) - Date.now()) < 60_000);
  const batch = await publish(relay, [
    { channel: "news", data: "kept", timestamp: "2026-01-02T15:04:05.999999999+01:00" },
    { channel: "news", data: "stamped", timestamp: "0001-01-01T00:00:00Z" },
    { channel: "news", data: "null", timestamp: null },
    { type: "error", channel: "news", processId: "other", data: "" },
    { channel: "news" },
    { channel: "", data: "empty channel is everyone" },
    { type: "custom_type", data: null },
  ]);
  assert.deepEqual(await batch.json(), { messages: 7, delivered: 7 });
  const got = [];
  for (let i = 0; i < 7; i++) got.push(await nextGoWs(client));
  assert.equal(got[0].timestamp, "2026-01-02T15:04:05.999999999+01:00");
  assert.notEqual(got[1].timestamp, "0001-01-01T00:00:00Z");
  assert.ok(Date.parse(got[2].timestamp) > 0);
  assert.deepEqual(got.slice(3).map(untimed), [
    { type: "error", channel: "news", processId: "other", data: "" },
    { type: "event", channel: "news" },
    { type: "event", data: "empty channel is everyone" },
    { type: "custom_type" },
  ]);
  await assertQuiet(client);
  await client.close();
});

Deno.test("go-ws publish API: 400 names the field and go-ws's rule", async () => {
  await using relay = await startGoWsRelay();
  const cases: [unknown, string][] = [
    [[], "empty batch: send at least one message"],
    [42, "body: expected a go-ws Message object"],
    [[{ data: 1 }, 2], "[1]: expected a go-ws Message object"],
    [{ data: 1, processID: "a" }, "processID: unknown field"],
    [{ type: "", data: 1 }, "type: expected a non-empty string"],
    [{ type: 3 }, "type: expected a non-empty string"],
    [{ channel: 7 }, "channel: expected a string"],
    [{ channel: "a b" }, 'channel: invalid channel name: "a b"'],
    [[{}, { channel: "process:a:b" }], '[1].channel: invalid process ID: "process:a:b"'],
    [{ processId: "a:b" }, 'processId: invalid process ID: "a:b"'],
    [{ processId: 12 }, "processId: invalid process ID: 12"],
    [{ timestamp: "2026-01-02" }, "timestamp: expected an RFC 3339 time"],
    [{ timestamp: 1767366245000 }, "timestamp: expected an RFC 3339 time"],
  ];
  for (const [body, error] of cases) {
    const response = await publish(relay, body);
    assert.equal(response.status, 400, json(body));
    const answer = await response.json();
    assert.ok(answer.error.startsWith(error), `${json(body)}: ${answer.error}`);
  }
});

Deno.test("go-ws library: hub.publish and GoWsHub send go-ws's messages", async () => {
  await using relay = await startGoWsRelay();
  const client = await goWsClient(relay, ["process:p1", "alerts"]);
  const ws = new GoWsHub(relay.hub);
  assert.equal(await ws.sendProcessOutput("p1", "line of output\n"), 1);
  assert.equal(await ws.sendProcessStatus("p1", "exited", 2), 1);
  assert.equal(await ws.sendEvent("user-joined", { user: "alice" }), 1);
  assert.equal(await ws.sendError("server error"), 1);
  assert.equal(await ws.sendToChannel("alerts", { type: "event", data: "important" }), 1);
  assert.equal(await ws.sendToChannel("elsewhere", { data: "nobody" }), 0);
  assert.equal(await ws.broadcast({ type: "event", data: "hello everyone" }), 1);
  const when = new Date("2026-01-02T03:04:05.678Z");
  assert.equal(await relay.hub.publish("alerts", "plain data", { timestamp: when }), 1);
  assert.equal(await relay.hub.publish("", { any: "json" }), 1);
  const got = [];
  for (let i = 0; i < 8; i++) got.push(await nextGoWs(client));
  assert.deepEqual(got.map(untimed), [
    { type: "process_output", channel: "process:p1", processId: "p1", data: "line of output\n" },
    {
      type: "process_status",
      channel: "process:p1",
      processId: "p1",
      data: { exitCode: 2, status: "exited" },
    },
    { type: "event", data: { data: { user: "alice" }, event: "user-joined" } },
    { type: "error", data: "server error" },
    { type: "event", channel: "alerts", data: "important" },
    { type: "event", data: "hello everyone" },
    { type: "event", channel: "alerts", data: "plain data" },
    { type: "event", data: { any: "json" } },
  ]);
  assert.equal(got[6].timestamp, "2026-01-02T03:04:05.678Z");
  // Where go-ws returns an error, GoWsHub throws it with go-ws's text.
  const refusals: [() => unknown, string][] = [
    [() => ws.sendProcessOutput("a:b", "x"), "SendProcessOutput: invalid process ID"],
    [() => ws.sendProcessStatus("", "exited", 0), "SendProcessStatus: invalid process ID"],
    [() => ws.sendToChannel("a b", {}), "SendToChannel: invalid channel name"],
    [() => ws.sendToChannel("process:", {}), "SendToChannel: invalid process ID"],
    [() => ws.sendToChannel("c", { processId: "x:y" }), "SendToChannel: invalid process ID"],
    [() => ws.broadcast({ processId: "x y" }), "Broadcast: invalid process ID"],
    [() => ws.broadcast({ timestamp: "2026-01-02" }), "Broadcast: timestamp is not RFC 3339"],
  ];
  for (const [call, message] of refusals) assert.throws(call, new GoWsError(message));
  await assertQuiet(client);
  await client.close();
});

Deno.test("go-ws over server.workers: 2: every client once, whichever worker holds it", async () => {
  await using relay = await startGoWsRelay({ server: { workers: 2 } });
  // The kernel picks the worker; eight clients land on both in practice, and the
  // outcome must be the same wherever each is.
  const clients = await Promise.all(
    Array.from({ length: 8 }, async (_, i) => {
      const client = await TestClient.open(relay.url);
      for (const channel of i % 2 ? ["process:w"] : []) {
        client.send(json({ type: "subscribe", channel }));
      }
      await assertQuiet(client);
      return client;
    }),
  );
  const ws = new GoWsHub(relay.hub);
  await ws.sendProcessOutput("w", "to half");
  await ws.sendEvent("to", "all");
  for (const [i, client] of clients.entries()) {
    if (i % 2) assert.equal((await nextGoWs(client)).data, "to half");
    assert.deepEqual((await nextGoWs(client)).data, { data: "all", event: "to" });
    await assertQuiet(client);
    await client.close();
  }
});

Deno.test("go-ws config: the protocol, no rooms, go_ws_prefix by go-ws's rule, -check's line", () => {
  const config = parseConfig("websocket:\n  protocol: go-ws\nbroker:\n  type: redis\n");
  assert.equal(config.websocket.protocol, "go-ws");
  assert.equal(config.broker.go_ws_prefix, "ws");
  assert.match(
    describeDeployment(config, []),
    /^go-ws channels, .*broker redis at 127\.0\.0\.1:6379 \(go-ws RedisBridge, prefix ws\)/,
  );
  assert.throws(
    () => parseConfig("websocket:\n  protocol: go-ws\n  rooms: path\n"),
    /websocket\.rooms: must be none with websocket\.protocol: go-ws/,
  );
  assert.throws(
    () => parseConfig("broker:\n  go_ws_prefix: 'ws prefix'\n"),
    /broker\.go_ws_prefix: expected 1-256 of/,
  );
  assert.throws(() => parseConfig("websocket:\n  protocol: gows\n"), /expected raw, json or go-ws/);
});

Deno.test("go-ws: the frame is encoded once and the same text reaches every client", async () => {
  await using relay = await startTestRelay({ websocket: { protocol: "go-ws" } });
  const clients = [await goWsClient(relay), await goWsClient(relay)];
  await new GoWsHub(relay.hub).sendEvent("e", 1);
  const [a, b] = [await clients[0].next(), await clients[1].next()];
  assert.equal(a, b);
  parseGoWs(a);
  for (const client of clients) await client.close();
});
