import assert from "node:assert/strict";
import {
  ask,
  nextEvent,
  nextJson,
  scrape,
  startTestRelay,
  subscribe,
  TestClient,
} from "./helpers.ts";

const JSON_MODE = { websocket: { protocol: "json" as const } };

Deno.test("json: subscribe, publish, message envelope with seq, epoch and timestamp, unsubscribe", async () => {
  await using relay = await startTestRelay(JSON_MODE);
  const a = await TestClient.connect(relay);
  const subscribed = await ask(a, { type: "subscribe", channel: "process:proc-1", id: 7 });
  assert.deepEqual(
    { ...subscribed, epoch: typeof subscribed.epoch },
    { type: "subscribed", channel: "process:proc-1", seq: 0, epoch: "string", id: 7 },
  );
  const b = (await subscribe(relay, "process:proc-1")).client;
  const before = Date.now();
  b.send(JSON.stringify({ type: "publish", channel: "process:proc-1", data: { line: "hi" } }));
  for (const client of [a, b]) {
    const message = await nextJson(client);
    assert.equal(message.type, "message");
    assert.equal(message.channel, "process:proc-1");
    assert.deepEqual(message.data, { line: "hi" });
    assert.equal(message.seq, 1);
    assert.equal(message.epoch, subscribed.epoch, "every message names its numbering");
    assert.ok((message.timestamp as number) >= before);
  }
  assert.deepEqual(await ask(a, { type: "unsubscribe", channel: "process:proc-1", id: "u" }), {
    type: "unsubscribed",
    channel: "process:proc-1",
    id: "u",
  });
  b.send(JSON.stringify({ type: "publish", channel: "process:proc-1", data: 2 }));
  assert.equal((await nextJson(b)).seq, 2);
  assert.deepEqual(await ask(a, { type: "ping", id: 1 }), { type: "pong", id: 1 });
  assert.equal(a.pending, 0, "unsubscribed: nothing more arrived");
  await Promise.all([a.close(), b.close()]);
});

Deno.test("json: the Go hub's subscribe form names the channel in data", async () => {
  await using relay = await startTestRelay(JSON_MODE);
  const client = await TestClient.connect(relay);
  const reply = await ask(client, { type: "subscribe", data: "process:proc-1" });
  assert.equal(reply.channel, "process:proc-1");
  await relay.hub.publish("process:proc-1", "from the server");
  assert.equal((await nextJson(client)).data, "from the server");
  await client.close();
});

Deno.test("json: each bad frame gets its own error envelope and the connection stays", async () => {
  await using relay = await startTestRelay(JSON_MODE);
  const client = await TestClient.connect(relay);
  const cases: [unknown, string, RegExp][] = [
    ["{not json", "bad_json", /^not JSON: /],
    ["[1,2]", "bad_request", /expected a JSON object/],
    [{ type: 5 }, "bad_request", /type must be a string/],
    [{ type: "dance", id: 3 }, "unknown_type", /unknown type "dance"/],
    [{ type: "subscribe", channel: "has space" }, "bad_channel", /may only contain/],
    [{ type: "subscribe", channel: "" }, "bad_channel", /1-256 characters \(got 0\)/],
    [{ type: "subscribe", channel: "x".repeat(257) }, "bad_channel", /got 257/],
    [{ type: "subscribe" }, "bad_channel", /channel must be a string/],
    [{ type: "subscribe", channel: "ok", since: -1 }, "bad_request", /since must be/],
    [{ type: "subscribe", channel: "ok", since: 1.5 }, "bad_request", /since must be/],
    [{ type: "publish", channel: "ok" }, "bad_request", /publish needs data/],
    [{ type: "publish", channel: "a/b", data: 1 }, "bad_channel", /may only contain/],
    [{ type: "ping", id: {} }, "bad_request", /id must be/],
  ];
  for (const [frame, code, message] of cases) {
    const reply = await ask(client, frame);
    assert.equal(reply.type, "error", JSON.stringify(frame));
    assert.equal(reply.code, code, JSON.stringify(frame));
    assert.match(reply.message as string, message);
  }
  assert.equal((await ask(client, { type: "dance", id: 3 })).id, 3, "the request id is echoed");
  client.send(new Uint8Array([1, 2]));
  assert.equal((await nextJson(client)).code, "binary_unsupported");
  assert.deepEqual(await ask(client, { type: "ping" }), { type: "pong" });
  const samples = await scrape(relay);
  assert.equal(samples.get('websocket_protocol_errors_total{code="bad_channel"}'), 5);
  assert.equal(samples.get('websocket_protocol_errors_total{code="unknown_type"}'), 2);
  assert.equal(samples.get('websocket_protocol_errors_total{code="binary_unsupported"}'), 1);
  await client.close();
});

Deno.test("json: a frame over max_message_bytes closes with 1009", async () => {
  await using relay = await startTestRelay({
    websocket: { protocol: "json", max_message_bytes: 64 },
  });
  const client = await TestClient.connect(relay);
  client.send(JSON.stringify({ type: "publish", channel: "c", data: "x".repeat(100) }));
  assert.equal((await client.closed).code, 1009);
});

Deno.test("json: echo: false skips the publisher; channels keep apart", async () => {
  await using relay = await startTestRelay({ websocket: { protocol: "json", echo: false } });
  const a = (await subscribe(relay, "one")).client;
  const b = (await subscribe(relay, "one")).client;
  const other = (await subscribe(relay, "two")).client;
  a.send(JSON.stringify({ type: "publish", channel: "one", data: "from a" }));
  assert.equal((await nextJson(b)).data, "from a");
  assert.deepEqual(await ask(a, { type: "ping" }), { type: "pong" }, "a did not get its own");
  assert.equal(other.pending, 0);
  await Promise.all([a.close(), b.close(), other.close()]);
});

Deno.test("json: subscribe with since replays what was missed, in order, before live messages", async () => {
  await using relay = await startTestRelay(JSON_MODE);
  for (let i = 1; i <= 5; i++) await relay.hub.publish("runs", i);
  const client = await TestClient.connect(relay);
  const epoch = (await ask(client, { type: "subscribe", channel: "probe" })).epoch;
  const reply = await ask(client, { type: "subscribe", channel: "runs", since: 2, epoch });
  assert.equal(reply.recovered, true);
  assert.equal(reply.seq, 5);
  await relay.hub.publish("runs", 6);
  const seen = [];
  for (let i = 0; i < 4; i++) {
    const message = await nextJson(client);
    seen.push([message.seq, message.data]);
  }
  assert.deepEqual(seen, [[3, 3], [4, 4], [5, 5], [6, 6]]);
  await client.close();
});

Deno.test("json: since older than the history, from another epoch, or from the future is recovered: false", async () => {
  await using relay = await startTestRelay({
    websocket: { protocol: "json" },
    channels: { history_size: 3 },
  });
  for (let i = 1; i <= 6; i++) await relay.hub.publish("runs", i);
  const client = await TestClient.connect(relay);
  for (
    const [since, epoch] of [[1, undefined], [6, "another-run"], [99, undefined]] as const
  ) {
    const reply = await ask(client, { type: "subscribe", channel: "runs", since, epoch });
    assert.equal(reply.recovered, false, `since ${since} epoch ${epoch}`);
    assert.equal(reply.seq, 6);
  }
  // Within the 3 kept (4, 5, 6): recovered.
  const ok = await ask(client, { type: "subscribe", channel: "runs", since: 3 });
  assert.equal(ok.recovered, true);
  assert.deepEqual([(await nextJson(client)).seq, (await nextJson(client)).seq], [4, 5]);
  assert.equal((await nextJson(client)).seq, 6);
  await client.close();
});

Deno.test("Hub.publish() resolves with local deliveries; raw mode sends the data as it is", async () => {
  await using relay = await startTestRelay({ websocket: { rooms: "path" } });
  const a = await TestClient.connect(relay, "/runs/abc/stream");
  const b = await TestClient.connect(relay, "/runs/abc/stream");
  assert.equal(await relay.hub.publish("/runs/abc/stream", "step 1 done"), 2);
  assert.equal(await relay.hub.publish("/runs/abc/stream", { step: 2 }), 2);
  assert.equal(await relay.hub.publish("/runs/other", "nobody"), 0);
  for (const client of [a, b]) {
    assert.equal(await client.next(), "step 1 done");
    assert.equal(await client.next(), '{"step":2}');
  }
  const gone = nextEvent(relay.hub, "disconnect");
  await a.close();
  await gone;
  assert.equal(await relay.hub.publish("/runs/abc/stream", "x"), 1);
  await b.close();
});
