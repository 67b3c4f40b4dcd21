import assert from "node:assert/strict";
import type { Relay } from "../server.ts";
import { VERSION } from "../version.ts";
import { REDIS_AVAILABLE, RedisServer } from "./redis.ts";
import { commandWorks, nextEvent, scrape, startTestRelay, TestClient } from "./helpers.ts";

Deno.test("metrics expose the Go relay's names and add up after traffic", async () => {
  await using relay = await startTestRelay();
  const [a, b] = await Promise.all([TestClient.connect(relay), TestClient.connect(relay)]);
  a.send("héllo"); // 6 bytes of UTF-8
  a.send(new Uint8Array(10));
  for (const client of [a, b]) {
    await client.next();
    await client.next();
  }
  const left = nextEvent(relay.hub, "disconnect");
  await b.close();
  await left;
  const samples = await scrape(relay);
  assert.equal(samples.get("websocket_connected_clients"), 1);
  assert.equal(samples.get("websocket_connections_total"), 2);
  assert.equal(samples.get('websocket_disconnections_total{reason="client_close"}'), 1);
  assert.equal(samples.get('websocket_disconnections_total{reason="slow_consumer"}'), 0);
  assert.equal(samples.get("websocket_messages_total"), 2);
  assert.equal(samples.get("websocket_deliveries_total"), 4);
  assert.equal(samples.get("websocket_bytes_received_total"), 16);
  assert.equal(samples.get("websocket_bytes_sent_total"), 32);
  assert.equal(samples.get('websocket_rejected_connections_total{reason="origin"}'), 0);
  assert.equal(samples.get(`relay_build_info{version="${VERSION}"}`), 1);
  assert.ok(samples.has("process_resident_memory_bytes"), "runtime default metrics are merged");
  await a.close();
});

Deno.test({
  name: "metrics exposition passes promtool check metrics, with and without a broker",
  ignore: !(await commandWorks("promtool", ["--version"])) || !REDIS_AVAILABLE,
  fn: async () => {
    await using redis = await RedisServer.start();
    for (const type of ["none", "redis"] as const) {
      await using relay = await startTestRelay({ broker: { type, url: redis.url } });
      await promtoolCheck(relay);
    }
  },
});

/** Pipes the relay's exposition through `promtool check metrics`. */
async function promtoolCheck(relay: Relay): Promise<void> {
  const client = await TestClient.connect(relay);
  const { hostname, port } = relay.metricsAddr!;
  const response = await fetch(`http://${hostname}:${port}/metrics`);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0.0.4/);
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  await response.body!.pipeTo(child.stdin);
  const { code, stdout, stderr } = await child.output();
  const report = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  assert.equal(code, 0, report);
  await client.close();
}
