/**
 * The composition root: builds the hub, its link to other hubs (the Redis
 * broker, go-ws's Redis bridge, or the worker mesh) and the HTTP edge, and
 * owns start and shutdown. Only this module, and the entry points above
 * it, import scale-out (`broker.ts`, `gows_bridge.ts`, `cluster.ts`); the
 * edge (`server.ts`) is handed its hub.
 *
 * @example
 * ```ts
 * import { DEFAULT_CONFIG } from "./config.ts";
 * import { startRelay } from "./relay.ts";
 * const config = structuredClone(DEFAULT_CONFIG);
 * config.server.port = 0;
 * config.metrics.enabled = false;
 * await using relay = await startRelay(config);
 * console.log(relay.url); // ws://0.0.0.0:<port>/
 * ```
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { RedisBroker } from "./scale/broker.ts";
import { meshLink, RelayWorker } from "./scale/cluster.ts";
import { type Config, durationMs } from "./config.ts";
import { Hub, type HubOptions, linkHost } from "./core/hub.ts";
import { plural } from "./base/log.ts";
import type { MetricsSnapshot } from "./edge/metrics.ts";
import { formatHost, listenNode, type NodeListener } from "./edge/node_server.ts";
import {
  createEdge,
  type HandlerOptions,
  httpLimits,
  listenMetrics,
  type RelayHandler,
  RelayStartError,
} from "./edge/server.ts";
import { RelayStats } from "./core/stats.ts";
import { readTlsFiles } from "./startup.ts";
import { VERSION } from "./base/version.ts";

export { type HandlerOptions, type RelayHandler, RelayStartError } from "./edge/server.ts";

/** A running relay, as {@link startRelay} returns it. */
export interface Relay extends AsyncDisposable {
  /** The hub, for publishing from the embedding program and for events. */
  readonly hub: Hub;
  /** Where WebSocket clients connect (the bound port, even when 0 was asked for). */
  readonly addr: Deno.NetAddr;
  /** `ws://` or `wss://` URL of {@link addr}. */
  readonly url: string;
  /** Where `/metrics` is served, or `undefined` when metrics are off. */
  readonly metricsAddr: Deno.NetAddr | undefined;
  /**
   * Stops accepting upgrades (`/readyz` answers 503), closes every client
   * with 1001, waits for them up to `server.shutdown_timeout`, then stops
   * listening. Safe to call twice; both calls get the same promise.
   */
  shutdown(): Promise<void>;
  /** Resolves when the relay has shut down. */
  readonly finished: Promise<void>;
}

const log = getLogger(["relay", "server"]);
const clusterLog = getLogger(["relay", "cluster"]);

/**
 * Starts a relay as `config` describes; throws {@link RelayStartError} when
 * it cannot. With `server.workers` above 1 the relay runs in that many
 * workers sharing the port (see `cluster.ts`), and the returned `hub` is a
 * publisher into all of them that has no clients of its own.
 */
export async function startRelay(config: Config): Promise<Relay> {
  if (config.server.workers > 1) return await startCluster(config);
  return await serveRelay(config);
}

/**
 * Builds the relay's request handler and hub (with its broker when
 * `config` asks for one); a program serves it from its own listener.
 * Throws {@link RelayStartError} when a file it needs (JWT key, example
 * page) cannot be read.
 */
export async function createRelayHandler(
  config: Config,
  options: HandlerOptions = {},
): Promise<RelayHandler> {
  const { hub, broker } = options.hub
    ? { hub: options.hub, broker: undefined }
    : await newHub(config);
  let edge;
  try {
    edge = await createEdge(config, {
      ...options,
      hub,
      linkDown: () => broker?.up === false,
    });
  } catch (error) {
    if (!options.hub) await hub.shutdown();
    await broker?.close();
    throw error;
  }
  return {
    ...edge,
    // The link closes after the clients: their last messages still reach the other instances.
    drain: async () => {
      const stragglers = await edge.drain();
      await broker?.close();
      return stragglers;
    },
  };
}

/**
 * The hub options `config` asks for. Each worker of a cluster keeps a
 * replica of every channel's history, so each holds its share of the
 * process-wide history cap.
 */
export function hubOptions(config: Config): HubOptions {
  const { websocket, channels, server } = config;
  return {
    echo: websocket.echo,
    protocol: websocket.protocol,
    historySize: channels.history_size,
    historyTtlMs: durationMs(channels.history_ttl),
    historyMaxBytes: channels.history_max_bytes,
    maxHistoryBytesTotal: Math.floor(channels.max_history_bytes_total / server.workers),
    maxReplayBytes: channels.max_replay_bytes,
    maxIdleChannels: channels.max_idle_channels,
    replaySlackBytes: websocket.send_buffer_max_bytes || 4 * websocket.send_buffer_bytes,
    maxChannelsPerConnection: websocket.max_channels_per_connection,
  };
}

/** How one isolate's relay fits into a cluster; {@link startRelay} needs none of it. */
export interface ServeOptions extends HandlerOptions {
  /** Share the port with other listeners (`SO_REUSEPORT`). @default false */
  reusePort?: boolean;
  /** Log listening and shutting down; a cluster logs them once for all workers. @default true */
  logLifecycle?: boolean;
}

/** Serves a relay in this isolate: the WebSocket port, and metrics unless turned off. */
export async function serveRelay(config: Config, options: ServeOptions = {}): Promise<Relay> {
  const { server: serverConfig, metrics } = config;
  const { reusePort = serverConfig.reuse_port, logLifecycle = true } = options;
  const tls = await readTlsFiles(serverConfig.tls).catch((error) => {
    throw new RelayStartError(error.message, { cause: error });
  });
  const { connectionCount = new Int32Array(1) } = options;
  const { hub, handler, handleUpgrade, drain } = await createRelayHandler(config, {
    ...options,
    connectionCount,
    countedAtAccept: true,
  });
  const stats = hub.stats;

  let wsServer;
  try {
    wsServer = await listenNode(
      "WebSocket",
      {
        hostname: serverConfig.host,
        port: serverConfig.port,
        reusePort,
        ...tls,
        http: httpLimits(config),
        connections: { count: connectionCount, max: serverConfig.max_connections },
        stats,
      },
      handler,
      handleUpgrade,
    );
  } catch (error) {
    await hub.shutdown();
    throw new RelayStartError((error as Error).message, { cause: error });
  }

  let metricsServer: NodeListener | undefined;
  if (metrics.enabled) {
    try {
      // Sockets, not the hub's members: a drain's clients count until their sockets close.
      metricsServer = await listenMetrics(
        config,
        () => ({ stats, connectedClients: stats.openSockets }),
        stats,
      );
    } catch (error) {
      await wsServer.close();
      await hub.shutdown();
      throw error;
    }
  }

  const url = relayUrl(wsServer.addr, tls !== undefined);
  if (logLifecycle) announceListening(url, metricsServer?.addr, metrics.path);

  let stopping: Promise<void> | undefined;
  const shutdown = () => {
    stopping ??= (async () => {
      if (logLifecycle) {
        log.info("shutting down: closing {clients}", {
          count: hub.size,
          clients: plural(hub.size, "client"),
        });
      }
      const stragglers = await drain();
      if (stragglers > 0) {
        log.warning("{clients} did not finish closing within {timeout}", {
          count: stragglers,
          clients: plural(stragglers, "client"),
          timeout: serverConfig.shutdown_timeout,
        });
      }
      await Promise.all([wsServer.close(), metricsServer?.close()]);
      if (logLifecycle) log.info("shut down");
    })();
    return stopping;
  };

  const finished = Promise.all([wsServer.finished, metricsServer?.finished, hub.finished])
    .then(() => {});
  return {
    hub,
    addr: wsServer.addr,
    url,
    metricsAddr: metricsServer?.addr,
    shutdown,
    finished,
    [Symbol.asyncDispose]: shutdown,
  };
}

/**
 * The hub `config` asks for: on its own, or linked to the other instances
 * through Redis (the broker module is loaded only then).
 */
async function newHub(
  config: Config,
): Promise<{ hub: Hub; broker?: Pick<RedisBroker, "up" | "close"> }> {
  if (config.broker.type === "none") return { hub: new Hub(hubOptions(config)) };
  if (config.websocket.protocol === "go-ws") {
    // go-ws's RedisBridge format on go-ws's channels instead of the relay's bus.
    const { startGoWsBridge } = await import("./scale/gows_bridge.ts");
    return startGoWsBridge(config, hubOptions(config));
  }
  const { RedisBroker } = await import("./scale/broker.ts");
  const options = hubOptions(config);
  const broker = new RedisBroker({
    config: config.broker,
    historySize: options.historySize!,
    historyTtlMs: options.historyTtlMs!,
  });
  // History lives in Redis, where every instance can read it.
  const hub = new Hub({ ...options, historySize: 0, link: broker });
  broker.start(linkHost(hub));
  return { hub, broker };
}

/**
 * Starts `config.server.workers` workers on one port (see `cluster.ts`).
 * This thread keeps no clients: it starts the workers, serves `/metrics`
 * from their counters summed at scrape time, and drains them all on
 * shutdown.
 */
async function startCluster(config: Config): Promise<Relay> {
  const count = config.server.workers;
  const connectionCount = new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));
  const peers: (MessagePort | undefined)[][] = Array.from(
    { length: count },
    () => new Array(count).fill(undefined),
  );
  for (let i = 0; i < count; i++) {
    for (let j = i + 1; j < count; j++) {
      const { port1, port2 } = new MessageChannel();
      peers[i][j] = port1;
      peers[j][i] = port2;
    }
  }
  const inboxes = Array.from({ length: count }, () => new MessageChannel());
  const hub = new Hub({
    ...hubOptions(config),
    // Index `count`: this hub publishes into the workers and never sequences a channel.
    link: meshLink(count, inboxes.map((channel) => channel.port1)),
  });

  const workers: RelayWorker[] = [];
  let failure: Error | undefined;
  const onCrash = (error: Error) => {
    clusterLog.fatal("a worker failed: {error}; shutting down", { error: error.message });
    failure ??= error;
    shutdown();
  };
  let addr: Deno.NetAddr | undefined;
  try {
    // One after another: the first binds the port (0 picks one), the rest share it.
    for (let i = 0; i < count; i++) {
      const worker = new RelayWorker(onCrash);
      workers.push(worker);
      const reply = await worker.request({
        type: "start",
        config: {
          ...config,
          server: { ...config.server, port: addr?.port ?? config.server.port },
          metrics: { ...config.metrics, enabled: false },
        },
        index: i,
        // One epoch for the run: every worker's replica of a history agrees on it.
        epoch: hub.epoch,
        peers: peers[i],
        inbox: inboxes[i].port2,
        connectionCount,
      }, [...peers[i].filter((port) => port !== undefined), inboxes[i].port2]);
      if (reply.type === "failed") throw new RelayStartError(reply.message);
      if (reply.type === "listening") addr ??= reply.addr;
    }
  } catch (error) {
    for (const worker of workers) worker.terminate();
    await hub.shutdown();
    throw error;
  }

  const snapshot = async (): Promise<MetricsSnapshot> => {
    const total = new RelayStats();
    total.add(hub.stats);
    const workerClients = [];
    for (const reply of await Promise.all(workers.map((w) => w.request({ type: "stats" })))) {
      // A worker that is gone counts as none, keeping the others at their index.
      if (reply.type !== "stats") {
        workerClients.push(0);
        continue;
      }
      total.add(reply.snapshot.stats);
      workerClients.push(reply.snapshot.connectedClients);
    }
    const connectedClients = workerClients.reduce((sum, n) => sum + n, 0);
    return { stats: total, connectedClients, workerClients };
  };
  let metricsServer: NodeListener | undefined;
  if (config.metrics.enabled) {
    try {
      metricsServer = await listenMetrics(config, snapshot, hub.stats);
    } catch (error) {
      await Promise.all(workers.map((worker) => worker.request({ type: "shutdown" })));
      for (const worker of workers) worker.terminate();
      await hub.shutdown();
      throw error;
    }
  }
  const url = relayUrl(addr!, config.server.tls.enabled);
  announceListening(url, metricsServer?.addr, config.metrics.path);
  clusterLog.info("serving with {count} workers", { count });

  let stopping: Promise<void> | undefined;
  const shutdown = () => {
    stopping ??= (async () => {
      clusterLog.info("shutting down {count} workers", { count });
      // Each worker drains its own clients, as one relay would, in parallel.
      await Promise.all(workers.map((worker) => worker.request({ type: "shutdown" })));
      for (const worker of workers) worker.terminate();
      for (const { port1 } of inboxes) port1.close();
      await Promise.all([hub.shutdown(), metricsServer?.close()]);
      clusterLog.info("shut down");
    })();
    return stopping;
  };
  const finished = (async () => {
    await Promise.all([hub.finished, metricsServer?.finished]);
    if (failure) throw failure;
  })();
  // Whoever awaits `finished` sees a failure; shutdown() callers need not.
  finished.catch(() => {});
  return {
    hub,
    addr: addr!,
    url,
    metricsAddr: metricsServer?.addr,
    shutdown,
    finished,
    [Symbol.asyncDispose]: shutdown,
  };
}

/** The `ws://` or `wss://` URL clients use for `addr`. */
export function relayUrl(addr: Deno.NetAddr, tls: boolean): string {
  return `${tls ? "wss" : "ws"}://${formatHost(addr.hostname)}:${addr.port}/`;
}

/** Logs where the relay listens: the line scripts and tests wait for. */
export function announceListening(
  url: string,
  metricsAddr: Deno.NetAddr | undefined,
  metricsPath: string,
): void {
  log.info("relay {version} listening on {url}", { version: VERSION, url });
  if (metricsAddr) {
    const { hostname, port } = metricsAddr;
    log.info("metrics on {url}", { url: `http://${formatHost(hostname)}:${port}${metricsPath}` });
  }
}
