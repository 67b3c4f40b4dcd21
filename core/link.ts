/**
 * The link contract: what crosses between a hub and the other hubs it is
 * joined to (the workers' mesh, the Redis broker, go-ws's Redis bridge).
 * The messages are a union the receiver switches on; a link talks to its
 * hub only through {@link LinkHost}, and the hub to its link only through
 * {@link HubLink}, so neither needs the other's insides.
 *
 * @module
 */
import type { HistoryEntry } from "./history.ts";
import type { BrokerStats } from "./stats.ts";

/** A frame to deliver untouched to the members of `room` (`raw`, `go-ws`, `Hub.broadcast`). */
export interface FrameMessage {
  /** Tells the union's members apart. */
  kind: "frame";
  /** The room (or go-ws channel) it goes to. */
  room: string;
  /** The frame's payload. */
  data: string | ArrayBuffer;
  /** The payload's size in bytes. */
  bytes: number;
}

/** A `json` message its channel's sequencer numbered: an envelope to deliver and keep. */
export interface NumberedMessage {
  /** Tells the union's members apart. */
  kind: "numbered";
  /** The channel. */
  room: string;
  /** The `message` envelope's JSON text. */
  data: string;
  /** The envelope's size in bytes. */
  bytes: number;
  /** Its seq in the channel. */
  seq: number;
  /** The numbering `seq` belongs to. */
  epoch: string;
  /** When it was numbered, ms since the epoch. */
  time: number;
  /** The hub that accepted it: with echo off, the sender there is skipped. */
  origin: number;
  /** The id of the client that sent it on the hub at `origin`; none for a server publish. */
  sender?: string;
}

/** A `json` publish on its way to the hub (or broker) that numbers its channel. */
export interface PublishRequest {
  /** Tells the union's members apart. */
  kind: "publish";
  /** The channel. */
  room: string;
  /** The payload's JSON text. */
  data: string;
  /** The hub that accepted it. */
  origin: number;
  /** The id of the client that sent it on the hub at `origin`; none for a server publish. */
  sender?: string;
}

/** A message as it crosses from one hub to another. */
export type RelayMessage = FrameMessage | NumberedMessage | PublishRequest;

/** A channel's state as a broker keeps it, for a subscribe. */
export interface Recovery {
  /** The channel's last seq. */
  seq: number;
  /** The numbering `seq` belongs to. */
  epoch: string;
  /** Entries after `since`, oldest first. */
  entries: HistoryEntry[];
  /** False when some messages after `since` are no longer kept (or the broker is down). */
  complete: boolean;
}

/**
 * Joins a hub to other hubs. After each batch the hub hands it, in order,
 * every message that originated here (from its clients or
 * `Hub.broadcast`/`Hub.publish`); messages that arrived through
 * {@link LinkHost.deliver} are never forwarded again. Local sockets have
 * copied the bytes by then, so an `ArrayBuffer` may be transferred.
 */
export interface HubLink {
  /** This hub's id among the linked hubs, carried as `origin`. */
  readonly index: number;
  /** The link's own counters (a broker's), which the hub's stats report as `broker`. */
  readonly stats?: BrokerStats;
  /**
   * `transferable` lists the buffers of `messages` that arrived from clients
   * and nothing else holds; buffers an embedding program passed to
   * `Hub.broadcast` are its own and must be copied.
   */
  forward(messages: (FrameMessage | NumberedMessage)[], transferable: ArrayBuffer[]): void;
  /**
   * Who numbers `channel`'s `json` messages: `undefined` when this hub does
   * (and forwards them), otherwise a target for {@link sendTo}.
   */
  sequencerFor(channel: string): number | undefined;
  /** Sends `json` publishes to the sequencer of their channel. */
  sendTo(target: number, messages: PublishRequest[]): void;
  /**
   * Where history lives outside this hub (a broker): the channel's state and
   * the entries after `since`, fetched asynchronously. Without it the hub
   * answers from its own history.
   * @ignore The Redis broker's: its entries are frames of the relay's engine.
   */
  recover?(channel: string, since: number | undefined): Promise<Recovery>;
}

/**
 * What a link calls on its hub: the narrow side of the link contract.
 * `relay.ts` gets it with `linkHost(hub)` and hands it to the link it starts.
 */
export interface LinkHost {
  /** Queues messages another hub accepted, for this hub's clients (see `Hub.deliver`). */
  deliver(messages: RelayMessage[]): void;
  /**
   * Fetches, for each `json` channel this hub delivers, what the link's
   * history holds after the last message it delivered. The broker calls it
   * when its bus subscription is back after a loss: a message published
   * meanwhile then reaches clients now, not when the channel's next one
   * reveals the gap (which, on a quiet channel, may be never).
   */
  catchUp(): void;
  /**
   * The broker says `channel`'s numbering is now `epoch`, at `seq`, and what
   * came before under another epoch may be incomplete (another instance
   * numbered messages on its own, or Redis lost its data). Subscribers hear
   * it at once, as a `subscribed` with `recovered: false`.
   */
  renumbered(channel: string, epoch: string, seq: number): void;
  /** The link came up or went down: the hub's `broker` event. */
  linkState(up: boolean): void;
}

/**
 * What one batch of the hub's loop hands its link: the messages to
 * forward, the buffers that may travel with them, and the publishes for
 * other sequencers, by target. One call per batch, not per message.
 */
export class LinkOutbox {
  /** The link the batches go to. */
  readonly link: HubLink;
  #forward: (FrameMessage | NumberedMessage)[] = [];
  #transferable: ArrayBuffer[] = [];
  #requests = new Map<number, PublishRequest[]>();

  /** An empty outbox for `link`. */
  constructor(link: HubLink) {
    this.link = link;
  }

  /** This hub's id among the linked hubs. */
  get index(): number {
    return this.link.index;
  }

  /** Forwards `message` at the end of the batch; `transfer`: its buffer is the client's, not kept. */
  forward(message: FrameMessage | NumberedMessage, transfer?: ArrayBuffer): void {
    this.#forward.push(message);
    if (transfer !== undefined) this.#transferable.push(transfer);
  }

  /** Sends `request` to sequencer `target` at the end of the batch. */
  request(target: number, request: PublishRequest): void {
    const requests = this.#requests.get(target);
    if (requests === undefined) this.#requests.set(target, [request]);
    else requests.push(request);
  }

  /** Hands the batch to the link. */
  flush(): void {
    if (this.#forward.length > 0) {
      this.link.forward(this.#forward, this.#transferable);
      this.#forward = [];
      this.#transferable = [];
    }
    if (this.#requests.size > 0) {
      for (const [target, requests] of this.#requests) this.link.sendTo(target, requests);
      this.#requests = new Map();
    }
  }
}
