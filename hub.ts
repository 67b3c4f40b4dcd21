/**
 * The hub: the only owner of rooms and their clients. Register, unregister
 * and broadcast go through one ordered queue drained by {@link Hub.run}, so a
 * client registered before a message is queued receives it and one that is
 * gone does not. Fan-out hands the same `string | ArrayBuffer` to every
 * socket; a client over its send budget is closed with 1013 rather than
 * allowed to hold the broadcast or the server's memory hostage.
 *
 * @example
 * ```ts
 * import { Hub } from "./hub.ts";
 * const hub = new Hub({ echo: false });
 * hub.addEventListener("connect", (e) => console.log((e as CustomEvent).detail.client.id));
 * hub.broadcast("hello everyone");
 * await hub.shutdown();
 * ```
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { type Client, type ClientHost, CloseCode, utf8Length } from "./client.ts";
import { AsyncQueue } from "./queue.ts";
import { type DisconnectReason, RelayStats } from "./stats.ts";

/** Options for a {@link Hub}. */
export interface HubOptions {
  /** Whether a sender receives its own messages, as with the Go relay. @default true */
  echo?: boolean;
  /** Where this hub forwards what it accepts, for the hubs of other workers. */
  link?: HubLink;
}

/** A message as it crosses from one hub to another. */
export interface RelayMessage {
  room: string;
  data: string | ArrayBuffer;
  bytes: number;
}

/**
 * Joins a hub to other hubs. After each batch the hub hands it, in order,
 * every message that originated here (from its clients or
 * {@link Hub.broadcast}); messages that arrived through
 * {@link Hub.deliver} are never forwarded again. Local sockets have copied
 * the bytes by then, so an `ArrayBuffer` may be transferred.
 */
export interface HubLink {
  /**
   * `transferable` lists the buffers of `messages` that arrived from clients
   * and nothing else holds; buffers an embedding program passed to
   * {@link Hub.broadcast} are its own and must be copied.
   */
  forward(messages: RelayMessage[], transferable: ArrayBuffer[]): void;
}

/** Options for {@link Hub.broadcast}. */
export interface BroadcastOptions {
  /** The room to deliver to; `""` is the shared room. @default "" */
  room?: string;
}

/** `detail` of the hub's `connect` and `disconnect` events. */
export interface ClientEventDetail {
  client: Client;
  /** Set on `disconnect`. */
  reason?: DisconnectReason;
}

type HubEvent =
  | { kind: "register"; client: Client }
  | { kind: "unregister"; client: Client; reason: DisconnectReason }
  | {
    kind: "broadcast";
    from: Client | undefined;
    room: string;
    data: string | ArrayBuffer;
    bytes: number;
  }
  | { kind: "remote"; messages: RelayMessage[] }
  | { kind: "shutdown"; done: () => void };

const log = getLogger(["relay", "hub"]);

/**
 * Rooms, clients and fan-out. Dispatches `connect` and `disconnect` events
 * (`CustomEvent<ClientEventDetail>`) as clients come and go.
 */
export class Hub extends EventTarget implements ClientHost {
  /** The counters this hub adds to. */
  readonly stats: RelayStats = new RelayStats();
  /** Resolves when {@link run} has returned after {@link shutdown}. */
  readonly finished: Promise<void>;
  readonly #echo: boolean;
  readonly #link: HubLink | undefined;
  /** Messages of the current batch to hand to {@link #link}. */
  #outbox: RelayMessage[] = [];
  #transferable: ArrayBuffer[] = [];
  readonly #rooms = new Map<string, Set<Client>>();
  readonly #queue = new AsyncQueue<HubEvent>();
  #size = 0;
  #shuttingDown = false;

  constructor(options: HubOptions = {}) {
    super();
    const { echo = true, link } = options;
    this.#echo = echo;
    this.#link = link;
    this.finished = this.run();
  }

  /** Clients registered right now, across all rooms. */
  get size(): number {
    return this.#size;
  }

  /** Queues `client` to join its room. */
  register(client: Client): void {
    this.#push({ kind: "register", client });
  }

  /** Queues `client`'s removal, counted under `reason`. A client not registered is ignored. */
  unregister(client: Client, reason: DisconnectReason): void {
    this.#push({ kind: "unregister", client, reason });
  }

  /** Queues a frame that `client` sent, for everyone in its room. */
  receive(client: Client, data: string | ArrayBuffer, bytes: number): void {
    this.stats.bytesReceived += bytes;
    this.#push({ kind: "broadcast", from: client, room: client.room, data, bytes });
  }

  /** Queues `data` for every client in a room, as if a client had sent it. */
  broadcast(data: string | ArrayBuffer, options: BroadcastOptions = {}): void {
    const { room = "" } = options;
    const bytes = typeof data === "string" ? utf8Length(data) : data.byteLength;
    this.#push({ kind: "broadcast", from: undefined, room, data, bytes });
  }

  /**
   * Queues messages another hub accepted, for this hub's clients only: they
   * are neither counted as messages here (their origin counted them) nor
   * forwarded again.
   */
  deliver(messages: RelayMessage[]): void {
    this.#push({ kind: "remote", messages });
  }

  /**
   * Delivers what is already queued, then closes every client with 1001
   * (counted as `shutdown`) and stops the loop. Clients that register later
   * are closed the same way. Resolves once the loop has stopped.
   */
  shutdown(): Promise<void> {
    if (!this.#queue.closed) {
      this.#queue.push({ kind: "shutdown", done: () => this.#queue.close() });
    }
    return this.finished;
  }

  /** The hub's loop: drains the queue in batches until {@link shutdown}. */
  async run(): Promise<void> {
    for await (const batch of this.#queue) {
      for (const event of batch) {
        switch (event.kind) {
          case "broadcast":
            this.stats.messages++;
            this.#fanOut(event.from, event.room, event.data, event.bytes);
            if (this.#link !== undefined) {
              const { room, data, bytes } = event;
              this.#outbox.push({ room, data, bytes });
              if (event.from !== undefined && typeof data !== "string") {
                this.#transferable.push(data);
              }
            }
            break;
          case "remote":
            for (const { room, data, bytes } of event.messages) {
              this.#fanOut(undefined, room, data, bytes);
            }
            break;
          case "register":
            this.#add(event.client);
            break;
          case "unregister":
            this.#remove(event.client, event.reason);
            break;
          case "shutdown":
            this.#shuttingDown = true;
            for (const members of [...this.#rooms.values()]) {
              for (const client of members) this.#close(client, "shutdown");
            }
            event.done();
        }
      }
      if (this.#outbox.length > 0) {
        this.#link!.forward(this.#outbox, this.#transferable);
        this.#outbox = [];
        this.#transferable = [];
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  #push(event: HubEvent): void {
    // After shutdown the loop is gone; late socket events have nothing to change.
    if (!this.#queue.closed) this.#queue.push(event);
  }

  #fanOut(
    from: Client | undefined,
    room: string,
    data: string | ArrayBuffer,
    bytes: number,
  ): void {
    const stats = this.stats;
    const members = this.#rooms.get(room);
    if (members === undefined) return;
    const skip = this.#echo ? undefined : from;
    let delivered = 0;
    for (const target of members) {
      if (target === skip) continue;
      const result = target.send(data, bytes);
      if (result === "sent") delivered++;
      else if (result === "over_budget") this.#close(target, "slow_consumer");
    }
    stats.deliveries += delivered;
    stats.bytesSent += delivered * bytes;
  }

  #add(client: Client): void {
    let members = this.#rooms.get(client.room);
    if (members === undefined) {
      members = new Set();
      this.#rooms.set(client.room, members);
    }
    members.add(client);
    this.#size++;
    this.stats.connections++;
    log.debug("connect {id} from {remote} room={room}", {
      id: client.id,
      remote: client.remoteAddress,
      room: client.room,
    });
    this.dispatchEvent(new CustomEvent("connect", { detail: { client } }));
    if (this.#shuttingDown) this.#close(client, "shutdown");
  }

  /** The one removal path: every way out ends here, so counts cannot drift. */
  #remove(client: Client, reason: DisconnectReason): void {
    const members = this.#rooms.get(client.room);
    if (members === undefined || !members.delete(client)) return;
    if (members.size === 0) this.#rooms.delete(client.room);
    this.#size--;
    this.stats.disconnections[reason]++;
    log.debug("disconnect {id} from {remote} room={room} reason={reason} after {seconds}s", {
      id: client.id,
      remote: client.remoteAddress,
      room: client.room,
      reason,
      seconds: (Date.now() - client.connectedAt) / 1000,
    });
    this.dispatchEvent(new CustomEvent("disconnect", { detail: { client, reason } }));
  }

  /** Removes a client now and closes its socket with the code for `reason`. */
  #close(client: Client, reason: "slow_consumer" | "shutdown"): void {
    this.#remove(client, reason);
    if (reason === "slow_consumer") {
      client.close(CloseCode.TRY_AGAIN_LATER, reason, "send buffer full");
    } else {
      client.close(CloseCode.GOING_AWAY, reason, "server shutting down");
    }
  }
}
