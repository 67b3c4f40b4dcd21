/**
 * Running out of file descriptors: a relay child process under a low
 * `ulimit -n`, flooded with more bare TCP connections than it has
 * descriptors, stays up, keeps serving the clients it has, warns once, and
 * accepts again once the flood is gone.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseSamples, TestClient, within } from "./helpers.ts";
import { RelayProcess, withConfig } from "./process.ts";

/** Descriptors the relay gets: a few dozen are its own, the rest are for connections. */
const NOFILE = 256;
/** Bare connections in the flood: more than the relay has descriptors, fewer than its backlog. */
const FLOOD = NOFILE + 150;
/** Messages sent through the relay while it is out of descriptors. */
const MESSAGES = 100;

Deno.test("a relay out of file descriptors stays up, warns once, delivers to its clients, and accepts again once they are free", async () => {
  // No max_connections: nothing stops the flood before the descriptors run out.
  const yaml = [
    "server: {host: 127.0.0.1, port: 0, header_timeout: 60s}",
    "metrics: {host: 127.0.0.1, port: 0}",
  ].join("\n");
  await withConfig(yaml, async (dir) => {
    const { relay, url } = await RelayProcess.start(["-config-file", `${dir}/config.yaml`], {
      nofile: NOFILE,
    });
    await using _ = relay;
    const [, metricsUrl] = await relay.waitFor(/metrics on (http:\/\/\S+)/);
    // In this order, each registered before the next opens: the canary sees every message sent.
    const canary = await TestClient.open(url);
    const sender = await TestClient.open(url);

    const flood: Deno.TcpConn[] = [];
    try {
      for (let i = 0; i < FLOOD; i++) {
        flood.push(await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(url).port) }));
      }
      await relay.waitFor(/Cannot accept new connections: out of file descriptors \(E[MN]FILE\)/);
      for (let i = 0; i < MESSAGES; i++) sender.send(`during the flood ${i}`);
      for (let i = 0; i < MESSAGES; i++) assert.equal(await canary.next(), `during the flood ${i}`);
    } finally {
      for (const conn of flood) conn.close();
    }

    // Waits in the backlog until the flood's descriptors are free, then is accepted.
    const late = await TestClient.open(url);
    late.send("after the flood");
    assert.equal(await canary.next(), "after the flood");
    await relay.waitFor(/accepting connections again after [\d.]+ s out of file descriptors/);

    const samples = parseSamples(
      await within(fetch(metricsUrl).then((response) => response.text()), "a scrape"),
    );
    assert.ok(samples.get("relay_accept_errors_total")! > 0, "accept errors are counted");
    assert.equal(relay.stderr.match(/Cannot accept new connections/g)?.length, 1);
    await Promise.all([canary.close(), sender.close(), late.close()]);
  });
});
