/**
 * `server.workers: N`: the relay in N Deno workers of one process, each
 * serving the same port (`SO_REUSEPORT`, so the kernel spreads connections
 * across them) with its own hub. The hubs form a full mesh of
 * `MessagePort`s: a message accepted by one worker is fanned out there and
 * posted once per batch to each other worker, which fans it out to its own
 * clients; one hop per message per worker, never per client. This thread
 * keeps no clients: it starts the workers, serves `/metrics` from their
 * counters summed at scrape time, and drains them all on shutdown.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Config } from "./config.ts";
import { Hub, type HubLink, type RelayMessage } from "./hub.ts";
import type { MetricsSnapshot } from "./metrics.ts";
import type { NodeListener } from "./node_server.ts";
import {
  announceListening,
  hubOptions,
  listenMetrics,
  type Relay,
  RelayStartError,
  relayUrl,
} from "./server.ts";
import { RelayStats } from "./stats.ts";

/** What this thread asks of a worker; each request gets one reply with its `id`. */
export type WorkerRequest =
  & { id: number }
  & (
    | {
      type: "start";
      config: Config;
      /** This worker's index. */
      index: number;
      /** `peers[j]` reaches worker `j`, both ways; none for this worker. */
      peers: (MessagePort | undefined)[];
      /** The run's history epoch, shared by all hubs. */
      epoch: string;
      /** Messages published from this thread's hub. */
      inbox: MessagePort;
      /** Open connections across all workers, at index 0. */
      connectionCount: Int32Array;
    }
    | { type: "stats" }
    | { type: "shutdown" }
  );

/** A worker's reply. */
export type WorkerReply =
  & { id: number }
  & (
    | { type: "listening"; addr: Deno.NetAddr }
    | { type: "failed"; message: string }
    | { type: "stats"; snapshot: MetricsSnapshot }
    | { type: "stopped" }
  );

const log = getLogger(["relay", "cluster"]);

/**
 * The link that joins hub `index` to the workers' hubs through `ports`
 * (`ports[j]` reaches worker `j`; none for itself): one `postMessage` per
 * batch per peer. The last peer gets the client buffers transferred, the
 * others a copy (structured clone), since a buffer can be moved only once;
 * with two workers nothing is copied.
 */
export function meshLink(index: number, ports: (MessagePort | undefined)[]): HubLink {
  const peers = ports.filter((port) => port !== undefined);
  const last = peers.length - 1;
  const count = ports.length;
  return {
    index,
    forward(messages: RelayMessage[], transferable: ArrayBuffer[]) {
      for (let i = 0; i < last; i++) peers[i].postMessage(messages);
      peers[last].postMessage(messages, transferable);
    },
    // Each channel is numbered by one worker, picked by a hash of its name.
    sequencerFor(channel: string) {
      let hash = 0;
      for (let i = 0; i < channel.length; i++) hash = (hash * 31 + channel.charCodeAt(i)) | 0;
      const owner = (hash >>> 0) % count;
      return owner === index ? undefined : owner;
    },
    sendTo(to: number, messages: RelayMessage[]) {
      ports[to]!.postMessage(messages);
    },
  };
}

/** Starts `config.server.workers` workers on one port; see the module doc. */
export async function startCluster(config: Config): Promise<Relay> {
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
    log.fatal("a worker failed: {error}; shutting down", { error: error.message });
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
  log.info("serving with {count} workers", { count });

  let stopping: Promise<void> | undefined;
  const shutdown = () => {
    stopping ??= (async () => {
      log.info("shutting down {count} workers", { count });
      // Each worker drains its own clients, as one relay would, in parallel.
      await Promise.all(workers.map((worker) => worker.request({ type: "shutdown" })));
      for (const worker of workers) worker.terminate();
      for (const { port1 } of inboxes) port1.close();
      await Promise.all([hub.shutdown(), metricsServer?.close()]);
      log.info("shut down");
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

/** One worker and its pending requests. */
class RelayWorker {
  readonly #worker = new Worker(new URL("./relay_worker.ts", import.meta.url), {
    type: "module",
  });
  readonly #pending = new Map<number, (reply: WorkerReply) => void>();
  #lastId = 0;
  #gone = false;

  constructor(onCrash: (error: Error) => void) {
    this.#worker.onmessage = ({ data }: MessageEvent<WorkerReply>) => {
      this.#pending.get(data.id)?.(data);
      this.#pending.delete(data.id);
    };
    this.#worker.onerror = (event) => {
      event.preventDefault();
      this.#fail();
      onCrash(new Error(event.message));
    };
  }

  /**
   * Sends a request and resolves with the reply; a worker that has crashed
   * or been terminated answers `stopped` to everything.
   */
  request(
    request: DistributiveOmit<WorkerRequest, "id">,
    transfer: Transferable[] = [],
  ): Promise<WorkerReply> {
    const id = ++this.#lastId;
    if (this.#gone) return Promise.resolve({ id, type: "stopped" });
    const { promise, resolve } = Promise.withResolvers<WorkerReply>();
    this.#pending.set(id, resolve);
    this.#worker.postMessage({ ...request, id }, transfer);
    return promise;
  }

  terminate(): void {
    this.#worker.terminate();
    this.#fail();
  }

  #fail(): void {
    this.#gone = true;
    for (const [id, resolve] of this.#pending) resolve({ id, type: "stopped" });
    this.#pending.clear();
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
