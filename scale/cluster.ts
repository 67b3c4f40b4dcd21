/**
 * `server.workers: N`: the relay in N Deno workers of one process, each
 * serving the same port (`SO_REUSEPORT`, so the kernel spreads connections
 * across them) with its own hub. The hubs form a full mesh of
 * `MessagePort`s: a message accepted by one worker is fanned out there and
 * posted once per batch to each other worker, which fans it out to its own
 * clients; one hop per message per worker, never per client. Here: the
 * mesh link, the requests between the main thread and a worker, and the
 * main thread's handle on one worker; `relay.ts` starts and stops them.
 *
 * @module
 */
import type { Config } from "../config.ts";
import type { FrameMessage, HubLink, NumberedMessage, PublishRequest } from "../core/link.ts";
import type { MetricsSnapshot } from "../edge/metrics.ts";

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
    forward(messages: (FrameMessage | NumberedMessage)[], transferable: ArrayBuffer[]) {
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
    sendTo(to: number, messages: PublishRequest[]) {
      ports[to]!.postMessage(messages);
    },
  };
}

/** One worker (`relay_worker.ts`) and its pending requests. */
export class RelayWorker {
  readonly #worker = new Worker(new URL("../relay_worker.ts", import.meta.url), {
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
