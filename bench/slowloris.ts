/**
 * `deno run -A bench/slowloris.ts`: what a slowloris attack costs the relay
 * process. Opens many connections that each send most of a request head at
 * once (just under `server.max_header_bytes`, the most a head may hold) and
 * then one more byte every second, never finishing it; samples the relay's
 * RSS and heap before, while they are held, and after
 * `server.header_timeout` has closed them, and counts what the relay
 * closed. With `--rounds N` the attack is repeated on the same relay, which
 * shows whether memory kept after a round is reused by the next or grows.
 * Stops by itself: each round ends at the latest at twice the deadline plus
 * a few seconds.
 *
 * Usage: deno run -A bench/slowloris.ts [--connections 2000] [--header-timeout 10s] [--rounds 1]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseDuration } from "../base/duration.ts";
import { freePort } from "../tests/helpers.ts";
import { MemoryProbe, round1, sample } from "./memory.ts";
import { startServer } from "./run.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    connections: { type: "string", default: "2000" },
    "header-timeout": { type: "string", default: "10s" },
    "max-header-bytes": { type: "string", default: "16384" },
    rounds: { type: "string", default: "1" },
  },
});
const connections = Number(values.connections);
const headerTimeoutMs = parseDuration(values["header-timeout"]) ?? NaN;
const maxHeaderBytes = Number(values["max-header-bytes"]);
const rounds = Number(values.rounds);
if (!(connections > 0 && headerTimeoutMs > 0 && maxHeaderBytes > 1024 && rounds >= 1)) {
  console.error(
    "slowloris: --connections, --header-timeout, --max-header-bytes and --rounds must be positive",
  );
  Deno.exit(2);
}
const TRICKLE_MS = 1000;
const SAMPLE_MS = 250;
const GIVE_UP_MS = 2 * headerTimeoutMs + 5_000;
/** After the last close, for the relay to finish what the closes left it before the last sample. */
const SETTLE_MS = 2_000;

const metricsPort = freePort();
const { child, url } = await startServer("relay", undefined, 1, {
  RELAY_SERVER_HEADER_TIMEOUT: values["header-timeout"],
  RELAY_SERVER_MAX_HEADER_BYTES: String(maxHeaderBytes),
  RELAY_METRICS_PORT: String(metricsPort),
});
const port = Number(new URL(url).port);
const probe = new MemoryProbe(child.pid, metricsPort);

// Most of a head, never its end: short of the cap, so the relay has to hold it.
const head = new TextEncoder().encode(
  `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${"a".repeat(maxHeaderBytes - 1024)}`,
);
const dot = new TextEncoder().encode("a");
const open = new Set<Deno.TcpConn>();

/** One attack: every connection opened, held until the relay closes it (or the give-up time). */
async function attack() {
  let closedByRelay = 0;
  const before = probe.rssMiB();
  const heapBefore = await probe.heapMiB();
  const started = performance.now();
  for (let i = 0; i < connections; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    open.add(conn);
    conn.write(head).catch(() => {});
    // The relay closing the connection shows as the end of what it sends.
    (async () => {
      const buffer = new Uint8Array(1024);
      try {
        while ((await conn.read(buffer)) !== null);
      } catch {
        // Reset: closed all the same.
      }
      if (!open.delete(conn)) return;
      closedByRelay++;
      conn.close();
    })();
  }
  const connectedAt = performance.now();
  const trickle = setInterval(() => {
    for (const conn of open) conn.write(dot).catch(() => {});
  }, TRICKLE_MS);

  let peak = before;
  let heldPeak = before;
  let heapHeld = NaN;
  let allClosedAt: number | undefined;
  while (performance.now() - started < GIVE_UP_MS) {
    await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
    const rss = probe.rssMiB();
    peak = Math.max(peak, rss);
    if (open.size === connections) {
      heldPeak = Math.max(heldPeak, rss);
      // Once, halfway to the deadline: every head is in by then.
      if (Number.isNaN(heapHeld) && performance.now() - connectedAt > headerTimeoutMs / 2) {
        heapHeld = await probe.heapMiB();
      }
    }
    if (open.size === 0) {
      allClosedAt = performance.now();
      break;
    }
  }
  clearInterval(trickle);
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
  const after = probe.rssMiB();
  const heapAfter = await probe.heapMiB();
  return {
    secondsToConnectAll: round1((connectedAt - started) / 1000),
    closedByRelay,
    stillOpen: open.size,
    secondsUntilAllClosed: allClosedAt === undefined
      ? null
      : round1((allClosedAt - started) / 1000),
    rssMiB: {
      before: round1(before),
      peakWhileAllHeld: round1(heldPeak),
      peak: round1(peak),
      after: round1(after),
    },
    heapUsedMiB: {
      before: round1(heapBefore),
      whileAllHeld: round1(heapHeld),
      after: round1(heapAfter),
    },
    kibPerHeldConnection: round1((heldPeak - before) * 1024 / connections),
  };
}

try {
  const results = [];
  for (let round = 0; round < rounds; round++) results.push(await attack());
  const counted = sample(await probe.scrape(), 'relay_http_timeouts_total\\{phase="header"\\}');
  console.log(JSON.stringify(
    {
      connections,
      headerTimeout: values["header-timeout"],
      headBytesEach: head.length,
      headerTimeoutsCounted: counted,
      rounds: results,
    },
    null,
    2,
  ));
  const allClosed = results.every((r) => r.stillOpen === 0 && r.closedByRelay === connections);
  // At least: connections on the metrics port (the scrapes) are counted too.
  Deno.exitCode = allClosed && counted >= connections * rounds ? 0 : 1;
} finally {
  for (const conn of open) conn.close();
  child.kill("SIGTERM");
  await child.status;
}
