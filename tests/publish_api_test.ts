import assert from "node:assert/strict";
import {
  connectRaw,
  httpBase,
  nextJson,
  scrape,
  startTestRelay,
  subscribe,
  TestClient,
} from "./helpers.ts";
import type { Relay } from "../relay.ts";

const KEY = "publish-key-1";

function post(
  relay: Relay,
  body: string,
  headers: HeadersInit = { authorization: `Bearer ${KEY}` },
) {
  return fetch(`${httpBase(relay)}api/publish`, { method: "POST", body, headers });
}

Deno.test("publish API: 202 with local deliveries, single and batch, in order", async () => {
  await using relay = await startTestRelay({
    websocket: { protocol: "json" },
    auth: { publish_keys: [KEY] },
  });
  const [a, b] = [
    (await subscribe(relay, "runs.1")).client,
    (await subscribe(relay, "runs.1")).client,
  ];
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
    for (let i = 0; i < 3; i++) seen.push((await nextJson(client)).data);
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
    [post(relay, '{"channel":"bad name","data":1}'), 400, /^channel: "bad name" may only/],
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

Deno.test("publish API: 400 names the field of every bad message, single or at its index in a batch; nothing of a bad batch is delivered", async () => {
  await using relay = await startTestRelay({
    websocket: { protocol: "json" },
    auth: { publish_keys: [KEY] },
  });
  const subscriber = (await subscribe(relay, "ok")).client;
  const cases: [unknown, string][] = [
    [{ channel: 5, data: 1 }, "channel: must be a string (got number)"],
    [{ channel: null, data: 1 }, "channel: must be a string (got null)"],
    [{ channel: true, data: 1 }, "channel: must be a string (got boolean)"],
    [{ channel: ["a"], data: 1 }, "channel: must be a string (got array)"],
    [{ channel: { name: "a" }, data: 1 }, "channel: must be a string (got object)"],
    [{ channel: "bad name", data: 1 }, 'channel: "bad name" may only contain A-Z a-z 0-9 _ - . :'],
    [{ channel: "", data: 1 }, "channel: must be 1-256 characters (got 0)"],
    [{ channel: "x".repeat(257), data: 1 }, "channel: must be 1-256 characters (got 257)"],
    [{ data: 1 }, "channel: required"],
    [{ channel: "ok" }, "data: required"],
    [
      { channel: "ok", data: 1, chanel: "ok" },
      "chanel: unknown field; a message has channel and data only",
    ],
    [{ channel: "ok", data: 1, id: 7 }, "id: unknown field; a message has channel and data only"],
    [{ channel: "ok", data: 1, "": 0 }, '"": unknown field; a message has channel and data only'],
    // A typo is reported as such, not as the field it was meant to be.
    [{ chanel: "ok", data: 1 }, "chanel: unknown field; a message has channel and data only"],
    [
      [{ channel: "ok", data: 1 }, { channel: "ok", data: 2 }, { channel: 5, data: 3 }],
      "[2].channel: must be a string (got number)",
    ],
    [
      [{ channel: "ok", data: 1 }, { channel: "ok", data: 2, extra: true }],
      "[1].extra: unknown field; a message has channel and data only",
    ],
    [[{ channel: "ok", data: 1 }, null], "[1]: expected an object with channel and data"],
    [
      [{ channel: "ok", data: 1 }, { channel: "a b", data: 1 }],
      '[1].channel: "a b" may only contain A-Z a-z 0-9 _ - . :',
    ],
  ];
  for (const [body, error] of cases) {
    const response = await post(relay, JSON.stringify(body));
    assert.deepEqual(
      [response.status, await response.json()],
      [400, { error }],
      JSON.stringify(body),
    );
  }
  const good = await post(relay, JSON.stringify({ channel: "ok", data: "after" }));
  assert.deepEqual(await good.json(), { messages: 1, delivered: 1 });
  const first = await nextJson(subscriber);
  assert.equal(first.data, "after", "no message of a refused request was delivered");
  const samples = await scrape(relay);
  assert.equal(samples.get('relay_publish_requests_total{status="400"}'), cases.length);
  await subscriber.close();
});

Deno.test("publish API in raw mode: a channel that is not a string and unknown fields are 400s naming them", async () => {
  {
    await using relay = await startTestRelay({
      websocket: { rooms: "path" },
      auth: { publish_keys: [KEY] },
    });
    for (
      const [body, error] of [
        [{ channel: 5, data: 1 }, "channel: must be a string (got number)"],
        [{ channel: ["/a"], data: 1 }, "channel: must be a string (got array)"],
        [
          { channel: "/a", data: 1, room: "/b" },
          "room: unknown field; a message has channel and data only",
        ],
      ] as const
    ) {
      const response = await post(relay, JSON.stringify(body));
      assert.deepEqual([response.status, await response.json()], [400, { error }]);
    }
  }
  {
    await using relay = await startTestRelay({ auth: { publish_keys: [KEY] } });
    for (
      const [body, error] of [
        [{ channel: null, data: 1 }, "channel: must be a string (got null)"],
        [{ channel: false, data: 1 }, "channel: must be a string (got boolean)"],
        [
          [{ data: 1 }, { data: 2, to: "x" }],
          "[1].to: unknown field; a message has channel and data only",
        ],
      ] as const
    ) {
      const response = await post(relay, JSON.stringify(body));
      assert.deepEqual([response.status, await response.json()], [400, { error }]);
    }
  }
});

Deno.test("publish API: the key is read from the Authorization header only; a key in the URL is a 401 saying so", async () => {
  await using relay = await startTestRelay({
    websocket: { protocol: "json" },
    auth: { publish_keys: [KEY] },
  });
  const body = JSON.stringify({ channel: "ok", data: 1 });
  const url = `${httpBase(relay)}api/publish`;
  const inUrl =
    "send the publish key in the Authorization header (Authorization: Bearer <key>), not in the URL";
  const cases: [Promise<Response>, number, string?][] = [
    [fetch(`${url}?token=${KEY}`, { method: "POST", body }), 401, inUrl],
    // Even beside a good header: the key has been sent where logs keep it.
    [
      fetch(`${url}?token=${KEY}`, {
        method: "POST",
        body,
        headers: { authorization: `Bearer ${KEY}` },
      }),
      401,
      inUrl,
    ],
    [
      fetch(url, { method: "POST", body, headers: { "sec-websocket-protocol": `bearer.${KEY}` } }),
      401,
      "send one of auth.publish_keys as Authorization: Bearer <key>",
    ],
    [post(relay, body), 202],
  ];
  for (const [response, status, error] of cases) {
    const answer = await response;
    const json = await answer.json();
    assert.equal(answer.status, status, json.error);
    if (error !== undefined) assert.deepEqual(json, { error });
    for (const [name, value] of answer.headers) assert.ok(!value.includes(KEY), name);
  }
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
