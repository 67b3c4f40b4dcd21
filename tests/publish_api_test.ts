import assert from "node:assert/strict";
import { connectRaw, httpBase, scrape, startTestRelay, TestClient } from "./helpers.ts";
import type { Relay } from "../server.ts";

const KEY = "publish-key-1";

function post(
  relay: Relay,
  body: string,
  headers: HeadersInit = { authorization: `Bearer ${KEY}` },
) {
  return fetch(`${httpBase(relay)}api/publish`, { method: "POST", body, headers });
}

async function subscribe(relay: Relay, channel: string): Promise<TestClient> {
  const client = await TestClient.connect(relay);
  client.send(JSON.stringify({ type: "subscribe", channel }));
  assert.equal(JSON.parse(await client.next() as string).type, "subscribed");
  return client;
}

Deno.test("publish API: 202 with local deliveries, single and batch, in order", async () => {
  await using relay = await startTestRelay({
    websocket: { protocol: "json" },
    auth: { publish_keys: [KEY] },
  });
  const [a, b] = [await subscribe(relay, "runs.1"), await subscribe(relay, "runs.1")];
  const single = await post(relay, JSON.stringify({ channel: "runs.1", data: { step: 1 } }));
  assert.equal(single.status, 202);
  assert.deepEqual(await single.json(), { messages: 1, delivered: 2 });
  const batch = await post(
    relay,
    JSON.stringify([
      { channel: "runs.1", data: "two" },
      { channel: "runs.2", data: "nobody listens" },
      { channel: "runs.1", data: 3 },
    ]),
  );
  assert.deepEqual(await batch.json(), { messages: 3, delivered: 4 });
  for (const client of [a, b]) {
    const seen = [];
    for (let i = 0; i < 3; i++) seen.push(JSON.parse(await client.next() as string).data);
    assert.deepEqual(seen, [{ step: 1 }, "two", 3]);
  }
  const samples = await scrape(relay);
  assert.equal(samples.get('relay_publish_requests_total{status="202"}'), 2);
  await Promise.all([a.close(), b.close()]);
});

Deno.test("publish API: 401, 404, 405, 400 and 413 each say what is wrong", async () => {
  await using relay = await startTestRelay({
    websocket: { protocol: "json", max_message_bytes: 200 },
    auth: { publish_keys: [KEY] },
  });
  const cases: [Promise<Response>, number, RegExp][] = [
    [post(relay, "{}", {}), 401, /publish_keys as Authorization: Bearer/],
    [post(relay, "{}", { authorization: "Bearer wrong" }), 401, /publish_keys/],
    [fetch(`${httpBase(relay)}api/publish`), 405, /use POST/],
    [post(relay, "{oops"), 400, /^body is not JSON: /],
    [post(relay, "[]"), 400, /empty batch/],
    [post(relay, '"text"'), 400, /body: expected an object/],
    [post(relay, '{"channel":"ok"}'), 400, /^data: required/],
    [post(relay, '{"channel":"bad name","data":1}'), 400, /^channel: channel "bad name" may only/],
    [
      post(relay, '[{"channel":"ok","data":1},{"data":1}]'),
      400,
      /^\[1\]\.channel: required/,
    ],
    [post(relay, JSON.stringify({ channel: "ok", data: "x".repeat(300) })), 413, /over 200 bytes/],
  ];
  for (const [response, status, message] of cases) {
    const answer = await response;
    const body = await answer.json();
    assert.equal(answer.status, status, body.error);
    assert.match(body.error, message);
  }
  const samples = await scrape(relay);
  assert.equal(samples.get('relay_publish_requests_total{status="400"}'), 6);
  assert.equal(samples.get('relay_publish_requests_total{status="202"}'), undefined);
});

Deno.test("publish API: off (404) until a publish key is configured", async () => {
  await using relay = await startTestRelay();
  const response = await post(relay, '{"data":1}');
  assert.equal(response.status, 404);
  assert.match((await response.json()).error, /set auth.publish_keys/);
});

Deno.test("publish API in raw mode: path rooms are channels; rooms: none takes no channel", async () => {
  {
    await using relay = await startTestRelay({
      websocket: { rooms: "path" },
      auth: { publish_keys: [KEY] },
    });
    const client = await TestClient.connect(relay, "/runs/abc/stream");
    const ok = await post(relay, JSON.stringify({ channel: "/runs/abc/stream", data: "done" }));
    assert.deepEqual(await ok.json(), { messages: 1, delivered: 1 });
    assert.equal(await client.next(), "done");
    const bad = await post(relay, JSON.stringify({ channel: "runs", data: 1 }));
    assert.match((await bad.json()).error, /a channel is a path/);
    await client.close();
  }
  {
    await using relay = await startTestRelay({ auth: { publish_keys: [KEY] } });
    const client = await TestClient.connect(relay);
    const ok = await post(relay, JSON.stringify({ data: { to: "everyone" } }));
    assert.deepEqual(await ok.json(), { messages: 1, delivered: 1 });
    assert.equal(await client.next(), '{"to":"everyone"}');
    const bad = await post(relay, JSON.stringify({ channel: "x", data: 1 }));
    assert.match((await bad.json()).error, /leave channel out/);
    await client.close();
  }
});

Deno.test("publish API: 503 with Retry-After while the relay drains, never a 202 it will not deliver", async () => {
  const relay = await startTestRelay({
    websocket: { protocol: "json" },
    auth: { publish_keys: [KEY] },
    server: { shutdown_timeout: "30s" },
  });
  // A client that never answers the close frame keeps the drain open.
  const stubborn = await connectRaw(relay);
  const shutdown = relay.shutdown();
  assert.equal(await stubborn.readCloseCode(), 1001);
  const refused = await post(relay, JSON.stringify({ channel: "runs.1", data: 1 }));
  assert.equal(refused.status, 503);
  assert.equal(refused.headers.get("retry-after"), "1");
  assert.deepEqual(await refused.json(), { error: "not accepted: shutting down; retry later" });
  // Still a request's own mistakes first: retrying a bad request would not help.
  assert.equal((await post(relay, "{oops")).status, 400);
  stubborn.conn.close();
  await shutdown;
  assert.equal(relay.hub.stats.publishRequests["503"], 1);
});
