/**
 * `deno run -A bench/history_memory.ts`: the row "one client
 * publishes 2,500 x 1 MB on fresh channels, then leaves", against a relay
 * child process in `json` mode with the shipped history bounds. Prints the
 * relay's RSS, V8 heap and external memory (from its own `/metrics`) and the
 * bytes its history keeps, before, at the peak and after the client left,
 * and the round trip of a canary client publishing to itself meanwhile
 * (which must get every message back). Stops by itself.
 *
 * Usage: deno run -A bench/history_memory.ts [--count 2500] [--bytes 1000000]
 *   [--after-seconds 40] [--unbounded]
 *
 * "After" is read `--after-seconds` after the publisher left: V8 frees the
 * garbage of dropped history lazily, once the process has been idle for a
 * few seconds, so an earlier reading shows garbage not yet collected.
 * `--unbounded` turns the bounds off (`history_max_bytes`,
 * `max_history_bytes_total` and `max_idle_channels` 0), which is how the
 * relay behaved before them. Many tiny messages (`--count 400000 --bytes
 * 16`) measure the bound on idle channels rather than the byte bounds.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { openWebSocket, parseSamples, type Samples, within } from "../tests/helpers.ts";
import { RelayProcess, withConfig } from "../tests/process.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    count: { type: "string" },
    bytes: { type: "string" },
    "after-seconds": { type: "string" },
    unbounded: { type: "boolean" },
  },
});
const COUNT = Number(values.count ?? 2500);
const BYTES = Number(values.bytes ?? 1_000_000);
const AFTER_MS = Number(values["after-seconds"] ?? 40) * 1000;
if (!(COUNT > 0 && BYTES > 0 && AFTER_MS >= 0)) {
  console.error("history_memory: --count, --bytes and --after-seconds must be positive numbers");
  Deno.exit(2);
}
/**
 * Publishes between two pings (at least 16, or about 256 KB of them): the
 * publisher waits for the pong, so it never runs far ahead, and tiny
 * messages do not pay a round trip each.
 */
const WINDOW = Math.max(16, Math.floor(262_144 / BYTES));
const SAMPLE_MS = 200;
const CANARY_MS = 100;
/** The whole run, whatever happens. */
const DEADLINE_MS = 15 * 60_000;

const MiB = 1024 * 1024;
const bounds = values.unbounded
  ? "{history_max_bytes: 0, max_history_bytes_total: 0, max_idle_channels: 0}"
  : "{}";

/** What one scrape says about memory. */
interface Memory {
  rss: number;
  heap: number;
  external: number;
  history: number;
}

function memoryOf(samples: Samples): Memory {
  return {
    rss: samples.get("process_resident_memory_bytes")!,
    heap: samples.get("nodejs_heap_size_used_bytes")!,
    external: samples.get("nodejs_external_memory_bytes")!,
    history: samples.get("relay_history_bytes")!,
  };
}

/** The next message on `socket` whose parsed form satisfies `match`. */
function nextWhere(
  socket: WebSocket,
  match: (message: Record<string, unknown>) => boolean,
  what: string,
): Promise<Record<string, unknown>> {
  return within(
    new Promise((resolve) => {
      const listener = (event: MessageEvent) => {
        const message = JSON.parse(event.data);
        if (!match(message)) return;
        socket.removeEventListener("message", listener);
        resolve(message);
      };
      socket.addEventListener("message", listener);
    }),
    what,
    60_000,
  );
}

await within(
  withConfig(
    `server: {host: 127.0.0.1, port: 0}\nmetrics: {host: 127.0.0.1, port: 0}\n` +
      `websocket: {protocol: json}\nchannels: ${bounds}\nlog: {level: warning}\n`,
    async (dir) => {
      const { relay, url } = await RelayProcess.start(["-config-file", `${dir}/config.yaml`], {
        env: { RELAY_LOG_LEVEL: "info" },
      });
      await using _relay = relay;
      const metricsUrl = (await relay.waitFor(/metrics on (http:\/\/\S+)/))[1];
      const scrape = async () => memoryOf(parseSamples(await (await fetch(metricsUrl)).text()));

      const before = await scrape();
      const peak: Memory = { ...before };
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          const now = await scrape();
          for (const key of Object.keys(peak) as (keyof Memory)[]) {
            peak[key] = Math.max(peak[key], now[key]);
          }
          await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
        }
      })();

      // The canary publishes to its own channel and times each echo.
      const canary = await openWebSocket(url);
      canary.send(JSON.stringify({ type: "subscribe", channel: "canary" }));
      await nextWhere(canary, (m) => m.type === "subscribed", "the canary's subscribe");
      const roundTrips: number[] = [];
      let canaryRunning = true;
      const canaryLoop = (async () => {
        for (let n = 0; canaryRunning; n++) {
          const sent = performance.now();
          const echo = nextWhere(
            canary,
            (m) => m.type === "message" && (m.data as { n: number }).n === n,
            `the canary's message ${n}`,
          );
          canary.send(JSON.stringify({ type: "publish", channel: "canary", data: { n } }));
          await echo;
          roundTrips.push(performance.now() - sent);
          await new Promise((resolve) => setTimeout(resolve, CANARY_MS));
        }
      })();

      const started = performance.now();
      const publisher = await openWebSocket(url);
      const pad = "x".repeat(BYTES);
      for (let i = 0; i < COUNT; i += WINDOW) {
        for (let j = i; j < Math.min(COUNT, i + WINDOW); j++) {
          publisher.send(
            `{"type":"publish","channel":"fresh-${j}","data":"${pad}"}`,
          );
        }
        const pong = nextWhere(publisher, (m) => m.type === "pong" && m.id === i, `pong ${i}`);
        publisher.send(JSON.stringify({ type: "ping", id: i }));
        await pong;
      }
      const publishSeconds = (performance.now() - started) / 1000;
      const closed = new Promise((resolve) => publisher.onclose = resolve);
      publisher.close();
      await within(closed, "the publisher's close");

      await new Promise((resolve) => setTimeout(resolve, AFTER_MS));
      canaryRunning = false;
      await canaryLoop;
      sampling = false;
      await sampler;
      const after = await scrape();
      canary.close();

      const text = await (await fetch(metricsUrl)).text();
      const dropped = [...parseSamples(text)]
        .filter(([name, value]) => name.startsWith("relay_history_dropped_total") && value > 0)
        .map(([name, value]) => `${name.match(/reason="(\w+)"/)![1]} ${value}`);
      const sorted = [...roundTrips].sort((a, b) => a - b);
      const mb = (n: number) => (n / MiB).toFixed(0).padStart(8);
      console.log(
        `${COUNT} x ${BYTES} B on fresh channels, ${
          values.unbounded ? "unbounded history" : "shipped bounds"
        }; published in ${publishSeconds.toFixed(1)} s`,
      );
      console.log("phase      RSS MiB  heap MiB  external MiB  history MiB");
      for (const [phase, m] of [["before", before], ["peak", peak], ["after", after]] as const) {
        console.log(
          `${phase.padEnd(8)} ${mb(m.rss)}  ${mb(m.heap)}  ${mb(m.external)}      ${mb(m.history)}`,
        );
      }
      console.log(`(after: ${AFTER_MS / 1000} s after the publisher left; peak: max per column)`);
      console.log(`history dropped: ${dropped.join(", ") || "none"}`);
      console.log(
        `canary: ${roundTrips.length} round trips, every one answered; p50 ${
          sorted[Math.floor(sorted.length / 2)].toFixed(1)
        } ms, max ${sorted.at(-1)!.toFixed(1)} ms`,
      );
    },
  ),
  "the whole run",
  DEADLINE_MS,
);
