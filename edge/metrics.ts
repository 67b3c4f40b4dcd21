/**
 * The Prometheus exposition: every metric's definition and the `/metrics`
 * handler. Metric names are part of the drop-in contract with the Go relay
 * and its dashboards; do not rename them.
 *
 * Values are read from {@link RelayStats} and the hub's client count at scrape
 * time, so the gauge cannot drift from the real set of clients and the hot
 * path never calls into prom-client.
 *
 * @module
 */
import process from "node:process";
import client from "prom-client";
import { type BrokerStats, PUBLISH_SECONDS_BUCKETS, RelayStats } from "../core/stats.ts";
import { VERSION } from "../base/version.ts";

/** The numbers a scrape shows. */
export interface MetricsSnapshot {
  /** The relay's counters. */
  stats: RelayStats;
  /** Sockets open right now: clients served, and those being closed (a drain, an eviction). */
  connectedClients: number;
  /** With `server.workers` above 1: clients registered per worker, in worker order. */
  workerClients?: number[];
}

/** Where the numbers come from at scrape time: one hub, or every worker's summed. */
export type MetricsSource = () => MetricsSnapshot | Promise<MetricsSnapshot>;

// The runtime's default metrics are process-wide: one registry per process,
// merged into every relay's exposition.
const runtimeRegistry = new client.Registry();
client.collectDefaultMetrics({ register: runtimeRegistry });
// Gauges with a `_total` name fail `promtool check metrics`; they add nothing
// `nodejs_active_resources` does not already say.
for (const name of ["handles", "requests", "resources"]) {
  runtimeRegistry.removeSingleMetric(`nodejs_active_${name}_total`);
}
// prom-client reads memory and descriptors from /proc/self, which Deno opens
// only to --allow-all: under the relay's own permissions they would read 0
// forever (or appear only under -A). Resident memory has a Deno API; the rest
// go. Its CPU counters start when this module loads, after the CPU Deno spent
// compiling and loading; getrusage, through process.cpuUsage(), counts it all.
for (
  const name of [
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_heap_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_cpu_user_seconds_total",
    "process_cpu_system_seconds_total",
    "process_cpu_seconds_total",
  ]
) {
  runtimeRegistry.removeSingleMetric(name);
}
const cpuSeconds = (read: (usage: NodeJS.CpuUsage) => number) => () =>
  read(process.cpuUsage()) / 1e6;
counter(
  [runtimeRegistry],
  "process_cpu_user_seconds_total",
  "Total user CPU time spent in seconds.",
  cpuSeconds(({ user }) => user),
);
counter(
  [runtimeRegistry],
  "process_cpu_system_seconds_total",
  "Total system CPU time spent in seconds.",
  cpuSeconds(({ system }) => system),
);
counter(
  [runtimeRegistry],
  "process_cpu_seconds_total",
  "Total user and system CPU time spent in seconds.",
  cpuSeconds(({ user, system }) => user + system),
);
gauge(
  [runtimeRegistry],
  "process_resident_memory_bytes",
  "Resident memory size in bytes.",
  () => Deno.memoryUsage().rss,
);

/** Builds the relay's registry over `source` and returns the HTTP handler for it. */
export function createMetricsHandler(
  source: MetricsSource,
): (request: Request) => Promise<Response> {
  const registry = new client.Registry();
  // Set before each exposition; the collect() callbacks below read it.
  let current: MetricsSnapshot = { stats: new RelayStats(), connectedClients: 0 };
  const registers = [registry];

  new client.Gauge({
    name: "websocket_connected_clients",
    help: "WebSocket clients connected right now (sockets open, those being closed included).",
    registers,
    collect() {
      this.set(current.connectedClients);
    },
  });
  new client.Gauge({
    name: "relay_worker_connected_clients",
    help: "WebSocket clients connected right now, per worker (with server.workers above 1).",
    labelNames: ["worker"],
    registers,
    collect() {
      this.reset();
      current.workerClients?.forEach((count, worker) => this.set({ worker }, count));
    },
  });
  counter(
    registers,
    "websocket_connections_total",
    "WebSocket connections accepted.",
    () => current.stats.connections,
  );
  counter(
    registers,
    "websocket_messages_total",
    "Messages received and relayed.",
    () => current.stats.messages,
  );
  counter(
    registers,
    "websocket_deliveries_total",
    "Frames handed to client sockets.",
    () => current.stats.deliveries,
  );
  counter(
    registers,
    "websocket_bytes_received_total",
    "Payload bytes received from clients.",
    () => current.stats.bytesReceived,
  );
  counter(
    registers,
    "websocket_bytes_sent_total",
    "Payload bytes handed to client sockets.",
    () => current.stats.bytesSent,
  );
  countsBy(
    registers,
    "websocket_disconnections_total",
    "WebSocket clients removed, by reason.",
    "reason",
    () => current.stats.disconnections,
  );
  countsBy(
    registers,
    "websocket_rejected_connections_total",
    "Connections refused before a WebSocket upgrade, by reason (max_connections: closed at accept).",
    "reason",
    () => current.stats.rejected,
  );
  countsBy(
    registers,
    "websocket_protocol_errors_total",
    "Client frames refused, by error code (json protocol errors and rate limiting).",
    "code",
    () => current.stats.refused,
  );
  gauge(
    registers,
    "relay_history_bytes",
    "Bytes json channel history keeps right now, under channels.max_history_bytes_total.",
    () => current.stats.historyBytes,
  );
  gauge(
    registers,
    "relay_channels",
    "Channels and rooms held right now, summed over workers (each keeps a replica of json channels).",
    () => current.stats.channels,
  );
  gauge(
    registers,
    "relay_idle_channels",
    "json channels nobody is in, kept for their history, under channels.max_idle_channels.",
    () => current.stats.idleChannels,
  );
  countsBy(
    registers,
    "relay_history_dropped_total",
    "Messages dropped from json channel history, by the setting that bound them.",
    "reason",
    () => current.stats.historyDropped,
  );
  countsBy(
    registers,
    "relay_publish_requests_total",
    "Requests to the publish API, by HTTP status.",
    "status",
    () => current.stats.publishRequests,
  );
  counter(
    registers,
    "relay_accept_errors_total",
    "Accept attempts that failed for lack of file descriptors (EMFILE, ENFILE).",
    () => current.stats.acceptErrors,
  );
  countsBy(
    registers,
    "relay_http_timeouts_total",
    "Connections closed for a request head, body or keep-alive wait that ran out of time.",
    "phase",
    () => current.stats.httpTimeouts,
  );
  countsBy(
    registers,
    "relay_unexpected_errors_total",
    "Errors the relay logged and served on after: uncaught exceptions, unhandled rejections, HTTP handlers that threw.",
    "kind",
    () => current.stats.unexpectedErrors,
  );
  gauge(
    registers,
    "relay_broker_up",
    "1 while connected to the broker (Redis), else 0; absent without a broker.",
    () => current.stats.broker?.up,
  );
  counter(
    registers,
    "relay_broker_published_total",
    "Messages published to the broker.",
    () => current.stats.broker?.published,
  );
  counter(
    registers,
    "relay_broker_received_total",
    "Messages from other instances received through the broker.",
    () => current.stats.broker?.received,
  );
  counter(
    registers,
    "websocket_broker_dropped_total",
    "Messages for other instances lost while the broker was unreachable.",
    () => current.stats.broker?.dropped,
  );
  countsBy(
    registers,
    "relay_broker_refused_total",
    "Envelopes from Redis refused as go-ws refuses them (go-ws bridge): too large, malformed, bad processId or channel.",
    "reason",
    () => current.stats.broker?.refused,
  );
  registry.registerMetric(publishLatency(() => current.stats.broker) as unknown as client.Metric);
  new client.Gauge({
    name: "relay_build_info",
    help: "Always 1; the labels say which relay build this is.",
    labelNames: ["version"],
    registers,
  }).set({ version: VERSION }, 1);

  const merged = client.Registry.merge([registry, runtimeRegistry]);
  const render = async () => {
    current = await source();
    return await merged.metrics();
  };
  // One exposition at a time, so a scrape never mixes two snapshots.
  let last: Promise<unknown> = Promise.resolve();
  return async () => {
    const text = last.then(render, render);
    last = text;
    return new Response(await text, { headers: { "content-type": merged.contentType } });
  };
}

/**
 * A counter with one label, read at scrape time: a sample per entry of the
 * record `read` returns (in its order), none when it returns `undefined`.
 */
function countsBy(
  registers: client.Registry[],
  name: string,
  help: string,
  label: string,
  read: () => Record<string, number> | undefined,
): void {
  new client.Counter({
    name,
    help,
    labelNames: [label],
    registers,
    collect() {
      this.reset();
      for (const [value, count] of Object.entries(read() ?? {})) {
        this.inc({ [label]: value }, count);
      }
    },
  });
}

/** A counter read at scrape time; one that reads `undefined` has no sample (no broker). */
function counter(
  registers: client.Registry[],
  name: string,
  help: string,
  read: () => number | undefined,
): void {
  for (const r of registers) r.registerMetric(readMetric("counter", name, help, read));
}

/** A gauge read at scrape time; one that reads `undefined` has no sample (no broker). */
function gauge(
  registers: client.Registry[],
  name: string,
  help: string,
  read: () => number | undefined,
): void {
  for (const r of registers) r.registerMetric(readMetric("gauge", name, help, read));
}

/**
 * A metric without labels whose one sample is read at scrape time. Not a
 * prom-client Counter or Gauge: those always show a sample, 0 after a
 * reset, so a series that should be absent would read 0 instead.
 */
function readMetric(
  type: "counter" | "gauge",
  name: string,
  help: string,
  read: () => number | undefined,
): client.Metric {
  const metric = { name, help, type, aggregator: "sum" as const };
  return {
    ...metric,
    get() {
      const value = read();
      return { ...metric, values: value === undefined ? [] : [{ labels: {}, value }] };
    },
    reset() {},
  } as unknown as client.Metric;
}

/**
 * `relay_broker_publish_seconds`, a histogram built from the buckets the
 * broker counts into at publish time (prom-client's own histogram can only
 * observe, not be read from a snapshot).
 */
function publishLatency(read: () => BrokerStats | undefined) {
  const name = "relay_broker_publish_seconds";
  const help = "Time from handing messages to the broker to its acknowledgement.";
  return {
    name,
    help,
    type: "histogram",
    aggregator: "sum",
    get() {
      const broker = read();
      const values = [];
      if (broker !== undefined) {
        let cumulative = 0;
        PUBLISH_SECONDS_BUCKETS.forEach((le, i) => {
          cumulative += broker.publishBuckets[i];
          values.push({ metricName: `${name}_bucket`, labels: { le }, value: cumulative });
        });
        cumulative += broker.publishOverflow;
        values.push({ metricName: `${name}_bucket`, labels: { le: "+Inf" }, value: cumulative });
        values.push({ metricName: `${name}_sum`, labels: {}, value: broker.publishSecondsSum });
        values.push({ metricName: `${name}_count`, labels: {}, value: cumulative });
      }
      return { name, help, type: "histogram", values, aggregator: "sum" };
    },
    reset() {},
  };
}
