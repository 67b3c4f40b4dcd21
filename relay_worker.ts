/**
 * The entry point of one worker of a cluster (`server.workers` above 1; see
 * `cluster.ts`): serves the shared port with a hub linked to its peers and
 * answers the main thread's start, stats and shutdown requests.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { getLogger } from "@logtape/logtape";
import { meshLink, type WorkerReply, type WorkerRequest } from "./scale/cluster.ts";
import { Hub } from "./core/hub.ts";
import type { RelayMessage } from "./core/link.ts";
import { configureLogging, errorFields, logUncaughtErrors } from "./base/log.ts";
import { hubOptions, type Relay, serveRelay } from "./relay.ts";

let relay: Relay | undefined;

const reply = (message: WorkerReply) => self.postMessage(message);

self.onmessage = ({ data: request }: MessageEvent<WorkerRequest>) => {
  // Uncaught errors do not end a worker (logUncaughtErrors), so one in here
  // must still answer: the main thread waits for every reply.
  handle(request).catch((error) => {
    getLogger(["relay", "worker"]).error("{request} request failed: {cause}", {
      request: request.type,
      ...errorFields(error, true),
    });
    reply({ id: request.id, type: "failed", message: errorFields(error).cause });
  });
};

async function handle(request: WorkerRequest): Promise<void> {
  const { id } = request;
  switch (request.type) {
    case "start": {
      const { config, index, epoch, peers, inbox, connectionCount } = request;
      await configureLogging(config.log);
      // As main.ts does for a single-worker relay: logged, and the worker serves on.
      logUncaughtErrors((kind) => {
        if (relay) relay.hub.stats.unexpectedErrors[kind]++;
      });
      const hub = new Hub({ ...hubOptions(config), epoch, link: meshLink(index, peers) });
      const deliver = ({ data }: MessageEvent<RelayMessage[]>) => hub.deliver(data);
      const ports = [...peers.filter((port) => port !== undefined), inbox];
      for (const port of ports) port.onmessage = deliver;
      try {
        relay = await serveRelay(config, {
          hub,
          reusePort: true,
          connectionCount,
          logLifecycle: false,
        });
        return reply({ id, type: "listening", addr: relay.addr });
      } catch (error) {
        for (const port of ports) port.close();
        await hub.shutdown();
        return reply({ id, type: "failed", message: (error as Error).message });
      }
    }
    case "stats":
      return reply({
        id,
        type: "stats",
        snapshot: { stats: relay!.hub.stats, connectedClients: relay!.hub.stats.openSockets },
      });
    case "shutdown":
      await relay?.shutdown();
      return reply({ id, type: "stopped" });
  }
}
