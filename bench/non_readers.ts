/**
 * `deno run -A bench/non_readers.ts`: what clients that never read cost the
 * relay process. Opens a reading canary and N raw WebSocket clients that
 * complete the handshake and never read, broadcasts 64 KiB frames through
 * the canary's connection until each non-reader has been sent `--mib-each`,
 * and samples the relay's RSS and heap before, at the peak and after the
 * non-readers are gone. With the shipped `server.max_buffered_bytes` the
 * relay resets the furthest behind once all clients together hold that
 * much; `--max-buffered-bytes 0` shows the process without the cap. The
 * canary must receive every frame. Stops by itself.
 *
 * Usage: deno run -A bench/non_readers.ts [--clients 200] [--mib-each 16]
 *        [--max-buffered-bytes 268435456]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { freePort } from "../tests/helpers.ts";
import { MemoryProbe, round1, sample } from "./memory.ts";
import { startServer } from "./run.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    clients: { type: "string", default: "200" },
    "mib-each": { type: "string", default: "16" },
    "max-buffered-bytes": { type: "string", default: String(256 * 2 ** 20) },
  },
});
const clients = Number(values.clients);
const frames = Number(values["mib-each"]) * 16; // 64 KiB frames
const cap = values["max-buffered-bytes"];
if (!(clients > 0 && frames > 0 && Number(cap) >= 0)) {
  console.error("non_readers: --clients and --mib-each must be positive");
  Deno.exit(2);
}
const GIVE_UP_MS = 120_000;
const SETTLE_MS = 3_000;

const metricsPort = freePort();
const { child, url } = await startServer("relay", undefined, 1, {
  RELAY_SERVER_MAX_BUFFERED_BYTES: cap,
  // Judged by the process-wide cap only: no client is slow by its own limits here.
  RELAY_WEBSOCKET_SEND_TIMEOUT: "10m",
  RELAY_WEBSOCKET_SEND_BUFFER_MAX_BYTES: String(2 ** 40),
  RELAY_METRICS_PORT: String(metricsPort),
});
const probe = new MemoryProbe(child.pid, metricsPort);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const stalled: Deno.TcpConn[] = [];
const deadline = Date.now() + GIVE_UP_MS;
try {
  const before = probe.rssMiB();
  const heapBefore = await probe.heapMiB();
  const port = Number(new URL(url).port);
  for (let i = 0; i < clients; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new TextEncoder().encode(
      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ));
    stalled.push(conn); // never read again
  }
  const canary = new WebSocket(url);
  canary.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    canary.onopen = resolve;
    canary.onerror = reject;
  });
  let received = 0;
  canary.onmessage = () => received++;
  const frame = new Uint8Array(64 * 1024);
  let peak = before;
  let heapPeak = heapBefore;
  for (let sent = 0; sent < frames && Date.now() < deadline; sent++) {
    canary.send(frame);
    // In step with the canary, so it is never the one behind.
    while (received <= sent && Date.now() < deadline) await sleep(1);
    if (sent % 32 === 0) {
      peak = Math.max(peak, probe.rssMiB());
      heapPeak = Math.max(heapPeak, await probe.heapMiB());
    }
  }
  peak = Math.max(peak, probe.peakRssMiB());
  const metrics = await probe.scrape();
  const evicted = sample(metrics, 'websocket_disconnections_total\\{reason="slow_consumer"\\}');
  for (const conn of stalled) conn.close();
  stalled.length = 0;
  await sleep(SETTLE_MS);
  const result = {
    clients,
    mibSentToEach: frames / 16,
    maxBufferedBytes: Number(cap),
    canaryReceived: `${received}/${frames}`,
    evictedAsSlow: evicted,
    rssMiB: { before: round1(before), peak: round1(peak), after: round1(probe.rssMiB()) },
    heapUsedMiB: {
      before: round1(heapBefore),
      peak: round1(heapPeak),
      after: round1(await probe.heapMiB()),
    },
  };
  console.log(JSON.stringify(result, null, 2));
  canary.close();
  Deno.exitCode = received === frames ? 0 : 1;
} finally {
  for (const conn of stalled) conn.close();
  child.kill("SIGTERM");
  await child.status;
}
