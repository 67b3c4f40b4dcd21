/**
 * Running out of file descriptors: a relay child process under a low
 * `ulimit -n`, flooded with more bare TCP connections than it has
 * descriptors, stays up, keeps serving the clients it has, warns once, and
 * accepts again once the flood is gone; and the same cycle in this process,
 * run out of descriptors by opening files.
 *
 * @module
 */
import { configure, type LogRecord, reset } from "@logtape/logtape";
import assert from "node:assert/strict";
import { bounded, parseSamples, startTestRelay, TestClient, within } from "./helpers.ts";
import { RelayProcess, withConfig } from "./process.ts";
import { RawWebSocket } from "./raw_ws.ts";

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

/** This process's soft limit on open files, from /proc (the tests run with -A). */
function openFilesLimit(): number {
  const limits = Deno.readTextFileSync("/proc/self/limits");
  return Number(limits.match(/^Max open files\s+(\d+)/m)?.[1] ?? Infinity);
}

Deno.test({
  name:
    "a listener whose accept failed for lack of descriptors accepts the waiting connection once they are free, and says so once",
  // Running this process out of descriptors means opening that many files.
  ignore: openFilesLimit() > 100_000,
  async fn() {
    const records: LogRecord[] = [];
    const warned = Promise.withResolvers<void>();
    const recovered = Promise.withResolvers<void>();
    await configure({
      reset: true,
      sinks: {
        capture(record: LogRecord) {
          records.push(record);
          if (record.level === "warning") warned.resolve();
          if (String(record.rawMessage).startsWith("accepting connections again")) {
            recovered.resolve();
          }
        },
      },
      loggers: [
        { category: ["relay", "accept"], lowestLevel: "info", sinks: ["capture"] },
        { category: ["logtape", "meta"], lowestLevel: "fatal", sinks: [] },
      ],
    });
    try {
      await using relay = await startTestRelay();
      const files: Deno.FsFile[] = [];
      let conn: Deno.TcpConn;
      try {
        while (true) {
          try {
            files.push(Deno.openSync("/dev/null"));
          } catch (error) {
            assert.equal((error as { code?: string }).code, "EMFILE");
            break;
          }
        }
        // One descriptor for this end of the connection; the relay's end finds none.
        files.pop()!.close();
        conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.addr.port });
        await bounded(warned.promise, "the warning that descriptors ran out");
      } finally {
        for (const file of files) file.close();
      }
      try {
        await RawWebSocket.handshake(conn);
        await bounded(recovered.promise, "the line that accepting works again");
      } finally {
        conn.close();
      }
      assert.ok(relay.hub.stats.acceptErrors > 0);
      const warnings = records.filter((record) => record.level === "warning");
      assert.equal(warnings.length, 1);
      assert.equal(warnings[0].properties.code, "EMFILE");
    } finally {
      await reset();
    }
  },
});
