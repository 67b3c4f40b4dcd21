/**
 * The hub: the only owner of channels and their clients. Register,
 * unregister, subscribe, publish and broadcast go through one ordered queue
 * drained by the hub's own loop, so a client registered (or subscribed) before
 * a message is queued receives it and one that is gone does not.
 *
 * In `raw` mode a client is in exactly one channel, its room (`""`, or its
 * path with `rooms: path`), and frames are relayed untouched. In `json` mode
 * clients subscribe to channels, whose messages are numbered, kept and
 * recovered by the {@link Sequencer}. In `go-ws` mode (`gows.ts`) every
 * client is in the room `""`, which is what a go-ws broadcast reaches, and
 * subscribes to channels on top, without seq, history or replies. Who is in
 * which channel, and fan-out, are the {@link ChannelTable}'s; what crosses to
 * other hubs is the link contract's (`link.ts`).
 *
 * @example
 * ```ts
 * import { Hub } from "./hub.ts";
 * const hub = new Hub({ echo: false });
 * hub.addEventListener("connect", (e) => console.log(e.detail.client.id));
 * hub.broadcast("hello everyone");
 * await hub.shutdown();
 * ```
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Client, ClientHost } from "./client.ts";
import { Outbound, utf8Length } from "../engine/frame.ts";
import { ChannelTable } from "./channel_table.ts";
import { HistoryLedger } from "./history.ts";
import { type HubLink, type LinkHost, LinkOutbox, type RelayMessage } from "./link.ts";
import { ReplayPacer } from "./replays.ts";
import { type JsonChannelOptions, Sequencer } from "./sequencer.ts";
import { type Command, encodeUnsubscribed } from "./protocol.ts";
import {
  encodeGoWsLimitError,
  encodeGoWsPublication,
  GO_WS_MAX_SUBSCRIPTIONS,
  type GoWsFields,
} from "./gows.ts";
import { AsyncQueue } from "./queue.ts";
import { type DisconnectReason, RelayStats } from "./stats.ts";
import type { HubEventListener, HubEventMap } from "./hub_events.ts";

/** Options for a {@link Hub}; the `json` mode's bounds are {@link JsonChannelOptions}. */
export interface HubOptions extends JsonChannelOptions {
  /** Whether a sender receives its own messages, as with the Go relay. @default true */
  echo?: boolean;
  /**
   * `raw` relays frames untouched; `json` wraps messages in envelopes with a
   * seq; `go-ws` speaks go-ws's wire (`gows.ts`). @default "raw"
   */
  protocol?: "raw" | "json" | "go-ws";
  /** Identifies this run of the channels' histories; a client from another run cannot recover. */
  epoch?: string;
  /** Where this hub forwards what it accepts, for the hubs of other workers or instances. */
  link?: HubLink;
}

/** Options for {@link Hub.broadcast}. */
export interface BroadcastOptions {
  /** The room to deliver to; `""` is the shared room. @default "" */
  room?: string;
}

type HubEvent =
  | { kind: "register"; client: Client }
  | { kind: "unregister"; client: Client; reason: DisconnectReason; error?: string }
  | {
    kind: "broadcast";
    from: Client | undefined;
    room: string;
    data: string | ArrayBuffer;
    bytes: number;
    done?: (delivered: number) => void;
  }
  | { kind: "command"; client: Client; command: Exclude<Command, { type: "ping" }> }
  | { kind: "remote"; messages: RelayMessage[] }
  /** A continuation the loop runs in its turn: a broker's answer, a drain, a server publish. */
  | { kind: "run"; run: () => void }
  | { kind: "shutdown"; done: () => void };

const log = getLogger(["relay", "hub"]);

let hostOf: (hub: Hub) => ClientHost;
let linkOf: (hub: Hub) => LinkHost;

/** What `hub`'s link calls; `relay.ts` hands it to the broker it starts. */
export function linkHost(hub: Hub): LinkHost {
  return linkOf(hub);
}

/**
 * What `hub`'s clients call (register, frames, commands, drain): the edge
 * hands it to each `Client` it makes. Not on the library surface, which
 * has no use for it.
 */
export function clientHost(hub: Hub): ClientHost {
  return hostOf(hub);
}

/** The hub's `EventTarget` methods, typed by {@link HubEventMap}. */
export interface Hub {
  /** Listens for the hub's `type` events; `{ signal }` in `options` stops it. */
  addEventListener<K extends keyof HubEventMap>(
    type: K,
    listener: HubEventListener<K> | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Any other type, as on any `EventTarget`. */
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Stops a listener {@link addEventListener} added. */
  removeEventListener<K extends keyof HubEventMap>(
    type: K,
    listener: HubEventListener<K> | null,
    options?: boolean | EventListenerOptions,
  ): void;
  /** Any other type, as on any `EventTarget`. */
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

/** Channels, clients and fan-out; its events are {@link HubEventMap}'s. */
export class Hub extends EventTarget {
  static {
    hostOf = (hub) => hub.#clientHost;
    linkOf = (hub) => hub.#linkHost;
  }
  /** The counters this hub adds to (with a broker, the broker's too, as `stats.broker`). */
  readonly stats: RelayStats = new RelayStats();
  /** Resolves when the hub's loop has stopped after {@link shutdown}. */
  readonly finished: Promise<void>;
  /** Identifies this run of the channels' histories. */
  readonly epoch: string;
  readonly #echo: boolean;
  readonly #json: boolean;
  readonly #goWs: boolean;
  readonly #outbox: LinkOutbox | undefined;
  readonly #clients = new Set<Client>();
  readonly #table: ChannelTable;
  readonly #sequencer: Sequencer;
  /** The replays in flight, paced by their clients' sockets. */
  readonly #pacer: ReplayPacer;
  readonly #queue = new AsyncQueue<HubEvent>();
  readonly #sweeper: ReturnType<typeof setInterval> | undefined;
  #shuttingDown = false;
  /** What this hub's link calls; see {@link linkHost}. */
  readonly #linkHost: LinkHost = {
    deliver: (messages) => this.deliver(messages),
    catchUp: () => this.#later(() => this.#sequencer.catchUp()),
    renumbered: (name, epoch, seq) =>
      this.#later(() => this.#sequencer.renumbered(name, epoch, seq)),
    linkState: (up) => this.#emit("broker", { up }),
  };
  /** What this hub's clients call; see {@link clientHost}. */
  readonly #clientHost: ClientHost = {
    register: (client) => this.#push({ kind: "register", client }),
    // A client not registered is ignored.
    unregister: (client, reason, error) =>
      this.#push({ kind: "unregister", client, reason, error }),
    receive: (client, data, bytes) => {
      this.stats.bytesReceived += bytes;
      this.#push({ kind: "broadcast", from: client, room: client.room, data, bytes });
    },
    command: (client, command, bytes) => {
      this.stats.bytesReceived += bytes;
      this.#push({ kind: "command", client, command });
    },
    refused: (code) => this.stats.refused[code]++,
    drained: (client) => this.#later(() => this.#pacer.pump(client)),
  };

  /** A hub with `options`; its loop starts at once and runs until {@link shutdown}. */
  constructor(options: HubOptions = {}) {
    super();
    const {
      echo = true,
      protocol = "raw",
      historySize = 100,
      historyTtlMs = 300_000,
      historyMaxBytes = 8_388_608,
      maxHistoryBytesTotal = 268_435_456,
      maxReplayBytes = 8_388_608,
      replaySlackBytes = 16_777_216,
      maxChannelsPerConnection = 128,
      maxIdleChannels = 100_000,
      epoch = crypto.randomUUID().slice(0, 8),
      link,
    } = options;
    this.epoch = epoch;
    this.#echo = echo;
    this.#json = protocol === "json";
    this.#goWs = protocol === "go-ws";
    this.stats.broker = link?.stats;
    this.#outbox = link && new LinkOutbox(link);
    this.#pacer = new ReplayPacer({
      maxReplayBytes,
      maxHistoryBytesTotal,
      onOverBudget: (client) => this.#close(client, "slow_consumer"),
      onReplayed: ({ client, name, history, held }) =>
        this.#emit("replayed", { client, channel: name, messages: history, held }),
    });
    // Without a broker this hub numbers every channel, under its own epoch; with one, Redis does.
    const brokered = link?.recover !== undefined;
    const ledger = new HistoryLedger({ maxBytes: maxHistoryBytesTotal, counts: this.stats });
    const keepsHistory = this.#json && historySize > 0;
    this.#table = new ChannelTable({
      start: {
        epoch: brokered ? "" : epoch,
        numbering: !brokered,
        history: keepsHistory
          ? { size: historySize, ttlMs: historyTtlMs, maxBytes: historyMaxBytes, ledger }
          : undefined,
      },
      historyTtlMs,
      maxIdleChannels,
      maxBehindBytes: maxReplayBytes + replaySlackBytes,
      pacer: this.#pacer,
      stats: this.stats,
      onSlow: (client) => this.#close(client, "slow_consumer"),
    });
    this.#sequencer = new Sequencer({
      table: this.#table,
      pacer: this.#pacer,
      stats: this.stats,
      echo,
      maxChannels: maxChannelsPerConnection,
      outbox: this.#outbox,
      later: (task) => this.#later(task),
    });
    if (keepsHistory) {
      // Expired history goes even from channels nobody publishes to any more.
      const sweeper = setInterval(() => this.#table.sweep(), Math.min(historyTtlMs, 60_000));
      Deno.unrefTimer(sweeper);
      this.#sweeper = sweeper;
    }
    this.finished = this.#run();
  }

  /** Clients registered right now. */
  get size(): number {
    return this.#clients.size;
  }

  /** Queues a frame for every client in a room, untouched, as if a client had sent it. */
  broadcast(data: string | ArrayBuffer, options: BroadcastOptions = {}): void {
    const { room = "" } = options;
    const bytes = typeof data === "string" ? utf8Length(data) : data.byteLength;
    this.#push({ kind: "broadcast", from: undefined, room, data, bytes });
  }

  /**
   * Publishes `data` on `channel` from the server and resolves with the
   * number of this hub's clients it was handed to. In `json` mode it goes
   * out as a `message` envelope with the channel's next seq; in `raw` mode a
   * string goes out as it is and anything else as JSON text, to the room
   * named `channel` (`""` is everyone with `rooms: none`). In `go-ws` mode
   * it goes out as a go-ws `Message` (its `type`, `processId` and
   * `timestamp` from `goWs`; see `gows.ts`) to `channel`'s subscribers, or
   * with `channel` `""` to every client.
   */
  publish(channel: string, data: unknown, goWs?: GoWsFields): Promise<number> {
    const { promise, resolve } = Promise.withResolvers<number>();
    if (this.#json) {
      const text = JSON.stringify(data);
      this.#later(() => resolve(this.#sequencer.publish(channel, text)));
    } else {
      const frame = this.#goWs
        ? encodeGoWsPublication(channel, data, goWs)
        : typeof data === "string"
        ? data
        : JSON.stringify(data);
      const bytes = utf8Length(frame);
      this.#push({
        kind: "broadcast",
        from: undefined,
        room: channel,
        data: frame,
        bytes,
        done: resolve,
      });
    }
    // After shutdown nothing is delivered.
    if (this.#queue.closed) resolve(0);
    return promise;
  }

  /**
   * Queues messages another hub accepted, for this hub's clients only: they
   * are neither counted as messages here (their origin counted them) nor
   * forwarded again, except `json` publishes this hub sequences.
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

  /** {@link shutdown}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  /** The hub's loop: drains the queue in batches until {@link shutdown}; its only consumer. */
  async #run(): Promise<void> {
    for await (const batch of this.#queue) {
      for (const event of batch) this.#handle(event);
      this.#outbox?.flush();
    }
    clearInterval(this.#sweeper);
  }

  #handle(event: HubEvent): void {
    switch (event.kind) {
      case "broadcast": {
        this.stats.messages++;
        const { from, room, data, bytes } = event;
        const skip = this.#echo ? undefined : from;
        const delivered = this.#table.fanOut(room, new Outbound(data, bytes), skip);
        event.done?.(delivered);
        // A client's buffer is nobody else's once its frame is out: it may travel.
        const transfer = from !== undefined && typeof data !== "string" ? data : undefined;
        this.#outbox?.forward({ kind: "frame", room, data, bytes }, transfer);
        return;
      }
      case "command":
        return this.#command(event.client, event.command);
      case "remote":
        for (const message of event.messages) this.#remote(message);
        return;
      case "run":
        return event.run();
      case "register":
        return this.#add(event.client);
      case "unregister":
        return this.#remove(event.client, event.reason, event.error);
      case "shutdown":
        this.#shuttingDown = true;
        for (const client of this.#clients) this.#close(client, "shutdown");
        event.done();
    }
  }

  #push(event: HubEvent): void {
    // After shutdown the loop is gone; late socket events have nothing to change.
    if (!this.#queue.closed) this.#queue.push(event);
  }

  #later(run: () => void): void {
    this.#push({ kind: "run", run });
  }

  #emit<K extends keyof HubEventMap>(type: K, detail: HubEventMap[K]["detail"]): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #command(client: Client, command: Exclude<Command, { type: "ping" }>): void {
    if (!this.#clients.has(client)) return;
    switch (command.type) {
      case "subscribe":
        // go-ws's own cap and silence (gows.ts), before the json mode's.
        if (this.#goWs) return this.#subscribeGoWs(client, command.channel);
        return this.#sequencer.subscribe(client, command);
      case "unsubscribe":
        this.#table.leave(client, command.channel);
        // go-ws: unsubscribing is silent.
        if (this.#goWs) return;
        return client.reply(encodeUnsubscribed(command.channel, command.id));
      case "publish":
        this.#sequencer.publish(command.channel, command.data, client);
    }
  }

  /** A go-ws subscribe: silent, capped as go-ws caps it, with nothing to recover. */
  #subscribeGoWs(client: Client, name: string): void {
    // The shared room is one of the client's channels, hence `>`.
    if (!client.channels.has(name) && client.channels.size > GO_WS_MAX_SUBSCRIPTIONS) {
      this.stats.refused.too_many_channels++;
      return client.reply(encodeGoWsLimitError());
    }
    this.#table.join(client, name);
  }

  /** A message from another hub: a frame goes out as it is; `json` ones are the sequencer's. */
  #remote(message: RelayMessage): void {
    switch (message.kind) {
      case "frame":
        this.#table.fanOut(message.room, new Outbound(message.data, message.bytes));
        return;
      case "numbered":
        return this.#sequencer.numbered(message);
      case "publish":
        this.#sequencer.publish(message.room, message.data, message.sender, message.origin);
    }
  }

  #add(client: Client): void {
    this.#clients.add(client);
    if (!client.json) this.#table.join(client, client.room);
    this.stats.connections++;
    log.debug("connect {id} from {remote} room={room}", {
      id: client.id,
      remote: client.remoteAddress,
      room: client.room,
    });
    this.#emit("connect", { client });
    if (this.#shuttingDown) this.#close(client, "shutdown");
  }

  /** The one removal path: every way out ends here, so counts cannot drift. */
  #remove(client: Client, reason: DisconnectReason, error?: string): void {
    if (!this.#clients.delete(client)) return;
    this.#table.leaveAll(client);
    this.stats.disconnections[reason]++;
    log.debug(
      `disconnect {id} from {remote} room={room} reason={reason}${
        error === undefined ? "" : " ({error})"
      } after {seconds}s`,
      {
        id: client.id,
        remote: client.remoteAddress,
        room: client.room,
        reason,
        error,
        seconds: (Date.now() - client.connectedAt) / 1000,
      },
    );
    this.#emit("disconnect", error === undefined ? { client, reason } : { client, reason, error });
  }

  /** Removes a client now and closes its socket with the code for `reason`. */
  #close(client: Client, reason: "slow_consumer" | "shutdown"): void {
    this.#remove(client, reason);
    client.close(reason);
  }
}
