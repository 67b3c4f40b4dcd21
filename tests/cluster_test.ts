import assert from "node:assert/strict";
import { type Relay, RelayStartError, startRelay } from "../relay.ts";
import { within } from "./wait.ts";
import {
  freePort,
  nextJson,
  type Samples,
  scrape,
  startTestRelay,
  TestClient,
  testConfig,
} from "./helpers.ts";

/**
 * Opens a client and resolves once its worker has registered it: it sends a
 * probe and waits for the echo (other clients' probes are skipped).
 */
async function join(relay: Relay, path = "/"): Promise<TestClient> {
  const client = await TestClient.open(new URL(path, relay.url).href);
  const probe = `probe ${crypto.randomUUID()}`;
  client.send(probe);
  while (await client.next() !== probe);
  return client;
}

/** Clients per worker from a scrape, in worker order. */
function perWorker(samples: Samples): number[] {
  return [...samples].filter(([name]) => name.startsWith("relay_worker_connected_clients{"))
    .map(([, value]) => value);
}

/** Joins clients until every worker has at least one (the kernel picks the worker). */
async function joinAcrossWorkers(relay: Relay, min: number): Promise<TestClient[]> {
  const clients = [];
  while (clients.length < min || perWorker(await scrape(relay)).some((n) => n === 0)) {
    clients.push(await join(relay));
  }
  return clients;
}

/** The next `count` messages, skipping probes. */
async function collect(client: TestClient, count: number): Promise<(string | ArrayBuffer)[]> {
  const seen = [];
  while (seen.length < count) {
    const message = await client.next();
    if (typeof message === "string" && message.startsWith("probe ")) continue;
    seen.push(message);
  }
  return seen;
}

Deno.test("cluster: a message sent to one worker reaches every client on every worker", async () => {
  await using relay = await startTestRelay({ server: { workers: 2 } });
  const clients = await joinAcrossWorkers(relay, 6);
  const workers = perWorker(await scrape(relay));
  assert.equal(workers.length, 2);
  assert.ok(workers.every((n) => n > 0), `clients on both workers: ${workers}`);
  clients.forEach((client, i) => {
    client.send(`text ${i}`);
    client.send(new Uint8Array([i, 255 - i]));
  });
  for (const client of clients) {
    const got = await collect(client, clients.length * 2);
    // Per sender: text then binary, in order, bytes intact after the transfer.
    clients.forEach((_, i) => {
      const mine = got.filter((m) =>
        m === `text ${i}` || (m instanceof ArrayBuffer && new Uint8Array(m)[0] === i)
      );
      assert.equal(mine[0], `text ${i}`);
      assert.deepEqual([...new Uint8Array(mine[1] as ArrayBuffer)], [i, 255 - i]);
    });
    assert.equal(client.pending, 0);
  }
  const samples = await scrape(relay);
  assert.equal(samples.get("websocket_connected_clients"), clients.length);
  // Counted once, where they arrived: each client's probe, text and binary.
  assert.equal(samples.get("websocket_messages_total"), clients.length * 3);
  await Promise.all(clients.map((c) => c.close()));
});

Deno.test("cluster: hub.broadcast() from the main thread and path rooms span workers", async () => {
  await using relay = await startTestRelay({
    server: { workers: 2 },
    websocket: { rooms: "path" },
  });
  const inRoom = [];
  while (inRoom.length < 6 || perWorker(await scrape(relay)).some((n) => n === 0)) {
    inRoom.push(await join(relay, "/runs/1/stream"));
  }
  const outside = await join(relay, "/runs/2/stream");
  relay.hub.broadcast("run 1 done", { room: "/runs/1/stream" });
  relay.hub.broadcast(new Uint8Array([7]).buffer, { room: "/runs/2/stream" });
  for (const client of inRoom) assert.deepEqual(await collect(client, 1), ["run 1 done"]);
  assert.deepEqual([...new Uint8Array((await collect(outside, 1))[0] as ArrayBuffer)], [7]);
  await Promise.all([...inRoom, outside].map((c) => c.close()));
});

Deno.test("cluster: max_connections holds for the sum of all workers", async () => {
  await using relay = await startTestRelay({ server: { workers: 2, max_connections: 3 } });
  const clients = await Promise.all([1, 2, 3].map(() => join(relay)));
  await assert.rejects(TestClient.open(relay.url));
  const samples = await scrape(relay);
  assert.equal(samples.get('websocket_rejected_connections_total{reason="max_connections"}'), 1);
  await clients[0].close();
  // The slot is free once the close is complete on the server; a new client then fits.
  let replacement: TestClient | undefined;
  while (!replacement) replacement = await join(relay).catch(() => undefined);
  await Promise.all([...clients.slice(1), replacement].map((c) => c.close()));
});

Deno.test("cluster: shutdown closes every client on every worker with 1001", async () => {
  const relay = await startTestRelay({ server: { workers: 2 } });
  const clients = await joinAcrossWorkers(relay, 4);
  await relay.shutdown();
  await relay.finished;
  for (const client of clients) assert.equal((await client.closed).code, 1001);
});

Deno.test("cluster: a port in use fails the start with RelayStartError", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const config = testConfig({ server: { workers: 2, port: taken.addr.port } });
  await assert.rejects(startRelay(config), RelayStartError);
});

Deno.test("cluster json: one seq order per channel on every worker, and recovery on any worker", async () => {
  await using relay = await startTestRelay({
    server: { workers: 2 },
    websocket: { protocol: "json" },
  });
  const clients: TestClient[] = [];
  // Subscribed clients until both workers have some; the subscribed reply means registered.
  while (clients.length < 6 || perWorker(await scrape(relay)).some((n) => n === 0)) {
    const client = await TestClient.open(relay.url);
    client.send(JSON.stringify({ type: "subscribe", channel: "jobs" }));
    assert.equal((await nextJson(client)).type, "subscribed");
    clients.push(client);
  }
  // Publishers on both workers, and the main thread, at once.
  clients.forEach((client, i) => {
    for (let k = 0; k < 3; k++) {
      client.send(JSON.stringify({ type: "publish", channel: "jobs", data: `${i}.${k}` }));
    }
  });
  await relay.hub.publish("jobs", "main");
  const total = clients.length * 3 + 1;
  const streams = await Promise.all(clients.map(async (client) => {
    const stream = [];
    for (let i = 0; i < total; i++) {
      const { seq, data } = await nextJson(client);
      stream.push(`${seq}:${data}`);
    }
    return stream;
  }));
  // Every client saw the same messages with the same seqs, 1..total in order.
  for (const stream of streams) assert.deepEqual(stream, streams[0]);
  assert.deepEqual(
    streams[0].map((entry) => Number(entry.split(":")[0])),
    [
      ...Array(total).keys(),
    ].map((i) => i + 1),
  );
  // Per publisher, its own order.
  for (let i = 0; i < clients.length; i++) {
    const mine = streams[0].filter((entry) => entry.split(":")[1].startsWith(`${i}.`));
    assert.deepEqual(mine.map((entry) => entry.split(":")[1]), [`${i}.0`, `${i}.1`, `${i}.2`]);
  }
  // Late clients on either worker recover the last messages from their worker's replica.
  const late = await Promise.all([1, 2, 3, 4].map(() => TestClient.open(relay.url)));
  for (const client of late) {
    client.send(JSON.stringify({ type: "subscribe", channel: "jobs", since: total - 2 }));
    const reply = await nextJson(client);
    assert.equal(reply.recovered, true);
    const replayed = [
      await nextJson(client),
      await nextJson(client),
    ];
    assert.deepEqual(replayed.map((m) => `${m.seq}:${m.data}`), streams[0].slice(-2));
  }
  await Promise.all([...clients, ...late].map((c) => c.close()));
});

Deno.test("cluster json with echo: false: a publisher never gets its own message, whichever worker numbers the channel", async () => {
  await using relay = await startTestRelay({
    server: { workers: 2 },
    websocket: { protocol: "json", echo: false },
  });
  const channels = ["c0", "c1", "c2", "c3", "c4", "c5"];
  const clients: TestClient[] = [];
  while (clients.length < 4 || perWorker(await scrape(relay)).some((n) => n === 0)) {
    const client = await TestClient.open(relay.url);
    for (const channel of channels) {
      client.send(JSON.stringify({ type: "subscribe", channel }));
      assert.equal((await nextJson(client)).type, "subscribed");
    }
    clients.push(client);
  }
  clients.forEach((client, i) => {
    for (const channel of channels) {
      client.send(JSON.stringify({ type: "publish", channel, data: i }));
    }
  });
  for (const [i, client] of clients.entries()) {
    const senders = [];
    for (let k = 0; k < (clients.length - 1) * channels.length; k++) {
      senders.push((await nextJson(client)).data);
    }
    assert.ok(!senders.includes(i), `client ${i} got its own message`);
    client.send(JSON.stringify({ type: "ping" }));
    assert.equal((await nextJson(client)).type, "pong", "and nothing else");
  }
  await Promise.all(clients.map((c) => c.close()));
});

Deno.test("cluster: a metrics port in use fails the start and stops the workers", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const config = testConfig({ server: { workers: 2, port }, metrics: { port: taken.addr.port } });
  await assert.rejects(startRelay(config), /Cannot listen for metrics on 127.0.0.1:\d+/);
  // The workers let go of the WebSocket port: a relay can take it again.
  await using again = await startTestRelay({ server: { workers: 2, port } });
  assert.equal(again.addr.port, port);
});

Deno.test("cluster json: each worker keeps at most max_idle_channels idle channels, and the most recent recovers on any worker under one epoch", async () => {
  await using relay = await startTestRelay({
    server: { workers: 2 },
    websocket: { protocol: "json" },
    channels: { max_idle_channels: 10 },
  });
  for (let i = 0; i < 100; i++) await relay.hub.publish(`fresh-${i}`, i);
  // Each worker keeps a replica of every channel, so each forgets 90 of the 100.
  const forgotten = 'relay_history_dropped_total{reason="max_idle_channels"}';
  await within(
    (async () => {
      while ((await scrape(relay)).get(forgotten) !== 180) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })(),
    "both workers to forget 90 channels",
  );
  assert.equal((await scrape(relay)).get("relay_idle_channels"), 20);
  // Each worker orders its idle channels by when messages reached it, so which of the flood each
  // keeps differs; a channel used after the flood is the most recent on both.
  const late = await Promise.all([1, 2, 3, 4].map(() => TestClient.open(relay.url)));
  for (const client of late) {
    client.send(JSON.stringify({ type: "subscribe", channel: "recent" }));
    assert.equal((await nextJson(client)).type, "subscribed");
  }
  await relay.hub.publish("recent", "after the flood");
  const epochs = new Set();
  for (const client of late) epochs.add((await nextJson(client)).epoch);
  assert.equal(epochs.size, 1, `every worker names the channel's numbering alike: ${[...epochs]}`);
  const [epoch] = epochs;
  for (const client of late) {
    client.send(JSON.stringify({ type: "subscribe", channel: "recent", since: 0, epoch }));
    assert.equal((await nextJson(client)).recovered, true);
    assert.equal((await nextJson(client)).data, "after the flood");
    // Among the first half of what reached either worker, so forgotten on both: numbering and all.
    client.send(JSON.stringify({ type: "subscribe", channel: "fresh-0" }));
    assert.equal((await nextJson(client)).seq, 0);
  }
  await Promise.all(late.map((client) => client.close()));
});
