/**
 * `deno run -A bench/slowloris.ts`: what a slowloris attack costs the relay
 * process. Opens many connections that each send most of a request head at
 * once (just under `server.max_header_bytes`, the most a head may hold) and
 * then one more byte every second, never finishing it; samples the relay's
 * RSS before, while they are held, and after `server.header_timeout` has
 * closed them, and counts what the relay closed. Stops by itself: at the
 * latest at twice the deadline plus a few seconds.
 *
 * Usage: deno run -A bench/slowloris.ts [--connections 2000] [--header-timeout 10s]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseDuration } from "../duration.ts";
import { statusKiB } from "./loadgen.ts";
import { startServer } from "./run.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    connections: { type: "string", default: "2000" },
    "header-timeout": { type: "string", default: "10s" },
    "max-header-bytes": { type: "string", default: "16384" },
  },
});
const connections = Number(values.connections);
const headerTimeoutMs = parseDuration(values["header-timeout"]) ?? NaN;
const maxHeaderBytes = Number(values["max-header-bytes"]);
if (!(connections > 0 && headerTimeoutMs > 0 && maxHeaderBytes > 1024)) {
  console.error(
    "slowloris: --connections, --header-timeout and --max-header-bytes must be positive",
  );
  Deno.exit(2);
}
const TRICKLE_MS = 1000;
const SAMPLE_MS = 250;
const GIVE_UP_MS = 2 * headerTimeoutMs + 5_000;

const metricsPort = freePort();
const { child, url } = await startServer("relay", undefined, 1, {
  RELAY_SERVER_HEADER_TIMEOUT: values["header-timeout"],
  RELAY_SERVER_MAX_HEADER_BYTES: String(maxHeaderBytes),
  RELAY_METRICS_PORT: String(metricsPort),
});
const port = Number(new URL(url).port);
const rssMiB = () => statusKiB(child.pid, "VmRSS") / 1024;
const scrape = async () => await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
const heapMiB = async () =>
  Number((await scrape()).match(/^nodejs_heap_size_used_bytes (\S+)/m)?.[1] ?? NaN) / 2 ** 20;

// Most of a head, never its end: short of the cap, so the relay has to hold it.
const head = new TextEncoder().encode(
  `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${"a".repeat(maxHeaderBytes - 1024)}`,
);
const dot = new TextEncoder().encode("a");

let closedByRelay = 0;
const open = new Set<Deno.TcpConn>();
try {
  const before = rssMiB();
  const heapBefore = await heapMiB();
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
    const rss = rssMiB();
    peak = Math.max(peak, rss);
    if (open.size === connections) {
      heldPeak = Math.max(heldPeak, rss);
      // Once, halfway to the deadline: every head is in by then.
      if (Number.isNaN(heapHeld) && performance.now() - connectedAt > headerTimeoutMs / 2) {
        heapHeld = await heapMiB();
      }
    }
    if (open.size === 0) {
      allClosedAt = performance.now();
      break;
    }
  }
  clearInterval(trickle);
  // Let the relay finish what the closes left it (parsers, buffers) before the last sample.
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  const after = rssMiB();
  const metrics = await scrape();
  const heapAfter = Number(metrics.match(/^nodejs_heap_size_used_bytes (\S+)/m)?.[1] ?? NaN) /
    2 ** 20;
  const timeouts = Number(
    metrics.match(/^relay_http_timeouts_total\{phase="header"\} (\d+)/m)?.[1] ?? NaN,
  );
  console.log(JSON.stringify(
    {
      connections,
      headerTimeout: values["header-timeout"],
      headBytesEach: head.length,
      secondsToConnectAll: Number(((connectedAt - started) / 1000).toFixed(1)),
      closedByRelay,
      stillOpen: open.size,
      secondsUntilAllClosed: allClosedAt === undefined
        ? null
        : Number(((allClosedAt - started) / 1000).toFixed(1)),
      headerTimeoutsCounted: timeouts,
      rssMiB: {
        before: Number(before.toFixed(1)),
        peakWhileAllHeld: Number(heldPeak.toFixed(1)),
        peak: Number(peak.toFixed(1)),
        after: Number(after.toFixed(1)),
      },
      heapUsedMiB: {
        before: Number(heapBefore.toFixed(1)),
        whileAllHeld: Number(heapHeld.toFixed(1)),
        after: Number(heapAfter.toFixed(1)),
      },
      kibPerHeldConnection: Number(((heldPeak - before) * 1024 / connections).toFixed(1)),
    },
    null,
    2,
  ));
  Deno.exitCode = open.size === 0 && closedByRelay === connections ? 0 : 1;
} finally {
  for (const conn of open) conn.close();
  child.kill("SIGTERM");
  await child.status;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}
