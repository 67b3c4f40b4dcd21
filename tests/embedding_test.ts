/**
 * Embedding: the relay served from the embedding program's own server,
 * `Deno.serve` through `createRelayHandler().handler` (Deno's runtime
 * WebSocket) and `node:http` through `handleUpgrade` (the relay's engine).
 *
 * @module
 */
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { createRelayHandler } from "../relay.ts";
import { nextJson, TestClient, testConfig } from "./helpers.ts";

Deno.test("createRelayHandler() mounts the relay on the embedding program's own Deno.serve", async () => {
  const config = testConfig({ websocket: { protocol: "json" } });
  const relay = await createRelayHandler(config);
  const events: string[] = [];
  const listening = new AbortController();
  relay.hub.addEventListener("connect", (e) => events.push(`connect ${e.detail.client.id}`));
  relay.hub.addEventListener(
    "disconnect",
    ({ detail }) => events.push(`${detail.reason} ${detail.client.id}`),
    { signal: listening.signal },
  );
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (request, info) =>
      new URL(request.url).pathname === "/app"
        ? new Response("the program's own route")
        : relay.handler(request, info),
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  assert.equal(await (await fetch(`${base}/app`)).text(), "the program's own route");
  const client = await TestClient.open(`${base.replace("http", "ws")}/ws`);
  client.send(JSON.stringify({ type: "subscribe", channel: "news" }));
  assert.equal((await nextJson(client)).type, "subscribed");
  assert.equal(await relay.hub.publish("news", "from the embedding program"), 1);
  assert.equal((await nextJson(client)).data, "from the embedding program");
  assert.equal(await relay.drain(), 0);
  assert.equal((await client.closed).code, 1001);
  assert.match(events.join(), /^connect (\w+),shutdown \1$/);
  listening.abort();
});

Deno.test("handleUpgrade() serves the relay's engine on the embedding program's node:http server", async () => {
  const config = testConfig({ websocket: { protocol: "json", max_message_bytes: 1024 } });
  const relay = await createRelayHandler(config);
  const server = createServer((_request, response) => response.end("the program's own route"));
  server.on("upgrade", relay.handleUpgrade);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  try {
    const base = `http://127.0.0.1:${port}`;
    assert.equal(await (await fetch(`${base}/app`)).text(), "the program's own route");
    const client = await TestClient.open(`ws://127.0.0.1:${port}/ws`);
    client.send(JSON.stringify({ type: "subscribe", channel: "news" }));
    assert.equal((await nextJson(client)).type, "subscribed");
    assert.equal(await relay.hub.publish("news", "from the embedding program"), 1);
    assert.equal((await nextJson(client)).data, "from the embedding program");
    // The engine's limits hold here too: over max_message_bytes is 1009.
    const tooBig = await TestClient.open(`ws://127.0.0.1:${port}/ws`);
    tooBig.send("x".repeat(2048));
    assert.equal((await tooBig.closed).code, 1009);
    assert.equal(await relay.drain(), 0);
    assert.equal((await client.closed).code, 1001);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});
