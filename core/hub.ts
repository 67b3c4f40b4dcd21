/**
 * The hub: the only owner of channels and their clients. Register,
 * unregister, subscribe, publish and broadcast go through one ordered queue
 * drained by the hub's own loop, so a client registered (or subscribed) before
 * a message is queued receives it and one that is gone does not. Fan-out
 * hands the same `string | ArrayBuffer` to every socket; a client over its
 * send budget is closed with 1013 rather than allowed to hold the broadcast
 * or the server's memory hostage.
 *
 * In `raw` mode a client is in exactly one channel, its room (`""`, or its
 * path with `rooms: path`), and frames are relayed untouched. In `json` mode
 * clients subscribe to channels (up to `maxChannelsPerConnection` each);
 * each message gets the channel's next `seq` and is kept in the channel's
 * {@link History} for clients that reconnect, under per-channel and
 * process-wide byte bounds.
 *
 * A recovery (subscribe with `since`) is answered `recovered: true` only
 * when every missed message can be sent: kept, within `maxReplayBytes`, and
 * within what replays in flight may hold together. The replay then goes out
 * as the client's socket drains, never all at once into its budget, and the
 * channel's live messages for that client wait behind it, so each seq
 * arrives once and in order. A channel's state, the gate and the answer to
 * a subscribe are `channels.ts`'s; when and to whom is decided here.
 *
 * In `go-ws` mode (`gows.ts`) every client is in the room `""`, which is
 * what a go-ws broadcast reaches, and subscribes to channels on top, without
 * seq, history or replies; messages are go-ws frames on the raw path.
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
import type { Client, ClientHost } from "./client.ts";
import { Outbound, utf8Length } from "../engine/frame.ts";
import {
  type Channel,
  encoded,
  gate,
  historyState,
  localState,
  moveTo,
  newChannel,
  newReplay,
  numberLocally,
  type Recovery,
  type Replay,
  subscribeAnswer,
} from "./channels.ts";
import { type HistoryEntry, HistoryLedger } from "./history.ts";
import { ReplayPacer } from "./replays.ts";
import {
  type Command,
  encodeError,
  encodeMessage,
  encodeSubscribed,
  encodeUnsubscribed,
  type RequestId,
} from "./protocol.ts";
import {
  encodeGoWsLimitError,
  encodeGoWsPublication,
  GO_WS_MAX_SUBSCRIPTIONS,
  type GoWsFields,
} from "./gows.ts";
import { AsyncQueue } from "./queue.ts";
import { type DisconnectReason, RelayStats } from "./stats.ts";

/** Options for a {@link Hub}. */
export interface HubOptions {
  /** Whether a sender receives its own messages, as with the Go relay. @default true */
  echo?: boolean;
  /**
   * `raw` relays frames untouched; `json` wraps messages in envelopes with a
   * seq; `go-ws` speaks go-ws's wire (`gows.ts`). @default "raw"
   */
  protocol?: "raw" | "json" | "go-ws";
  /** Messages kept per channel for recovery (`json` mode). @default 100 */
  historySize?: number;
  /** How long a message stays in history, in ms. @default 300000 */
  historyTtlMs?: number;
  /** Bytes of history kept per channel; the oldest go past it. 0: no limit. @default 8388608 */
  historyMaxBytes?: number;
  /**
   * Bytes of history kept for all channels together (the oldest of any
   * channel go past it), and the most history replays in flight may hold
   * together. 0: no cap. @default 268435456
   */
  maxHistoryBytesTotal?: number;
  /** The most history one recovery replays; asking for more gets `recovered: false`. @default 8388608 */
  maxReplayBytes?: number;
  /**
   * How much further behind than a replay may start it may fall (live
   * messages held back while it runs) before the client is closed as slow:
   * its connection's hard limit. @default 16777216
   */
  replaySlackBytes?: number;
  /** Channels one `json` client may be in at once; 0: no limit. @default 128 */
  maxChannelsPerConnection?: number;
  /** Identifies this run of the channels' histories; a client from another run cannot recover. */
  epoch?: string;
  /** Where this hub forwards what it accepts, for the hubs of other workers. */
  link?: HubLink;
}

/** Options for {@link Hub.broadcast}. */
export interface BroadcastOptions {
  /** The room to deliver to; `""` is the shared room. @default "" */
  room?: string;
}

/** `detail` of the hub's `replayed` event: a recovery's replay has all gone out. */
export interface ReplayEventDetail {
  /** Who recovered. */
  client: Client;
  /** The channel recovered. */
  channel: string;
  /** History messages replayed. */
  messages: number;
  /** Live messages that waited behind the replay, sent after it. */
  held: number;
}

/** `detail` of the hub's `connect` and `disconnect` events. */
export interface ClientEventDetail {
  /** The client that came or went. */
  client: Client;
  /** Set on `disconnect`. */
  reason?: DisconnectReason;
}

/**
 * A message as it crosses from one hub to another: a frame to deliver in
 * `room` (a channel), or, with `request`, a `json` publish whose `data` is
 * the payload's JSON text for the channel's sequencing hub to number.
 */
export interface RelayMessage {
  /** The room or channel it goes to. */
  room: string;
  /** The frame's payload (or, with `request`, the publish's JSON text). */
  data: string | ArrayBuffer;
  /** The payload's size in bytes. */
  bytes: number;
  /** The frame's seq in its channel (`json` mode). */
  seq?: number;
  /** The numbering `seq` belongs to (`json` mode); the receiving hub's own when absent. */
  epoch?: string;
  /** When the frame was accepted, ms since the epoch (`json` mode). */
  time?: number;
  /** A publish for the sequencing hub to number and send on. */
  request?: boolean;
  /** The hub that accepted it and its sending client, skipped there when echo is off. */
  origin?: number;
  /** The id of the client that sent it on the hub at `origin`. */
  sender?: string;
}

/**
 * Joins a hub to other hubs. After each batch the hub hands it, in order,
 * every message that originated here (from its clients or
 * {@link Hub.broadcast}); messages that arrived through
 * {@link Hub.deliver} are never forwarded again. Local sockets have copied
 * the bytes by then, so an `ArrayBuffer` may be transferred.
 */
export interface HubLink {
  /** This hub's id among the linked hubs, carried as `origin`. */
  readonly index: number;
  /**
   * `transferable` lists the buffers of `messages` that arrived from clients
   * and nothing else holds; buffers an embedding program passed to
   * {@link Hub.broadcast} are its own and must be copied.
   */
  forward(messages: RelayMessage[], transferable: ArrayBuffer[]): void;
  /**
   * Who numbers `channel`'s `json` messages: `undefined` when this hub does
   * (and forwards them), otherwise a target for {@link sendTo}.
   */
  sequencerFor(channel: string): number | undefined;
  /** Sends `json` publishes to the sequencer of their channel. */
  sendTo(target: number, messages: RelayMessage[]): void;
  /**
   * Where history lives outside this hub (a broker): the channel's state and
   * the entries after `since`, fetched asynchronously. Without it the hub
   * answers from its own {@link History}.
   * @ignore The Redis broker's: its entries are frames of the relay's engine.
   */
  recover?(channel: string, since: number | undefined): Promise<Recovery>;
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
    done?: (delivered: number) => void;
  }
  | { kind: "command"; client: Client; command: Exclude<Command, { type: "ping" }> }
  | { kind: "publish"; channel: string; data: string; done: (delivered: number) => void }
  | { kind: "remote"; messages: RelayMessage[] }
  | {
    kind: "recovered";
    client: Client;
    command: Extract<Command, { type: "subscribe" }>;
    recovery: Recovery | undefined;
    replay: Replay;
  }
  | { kind: "drained"; client: Client }
  | { kind: "catch-up" }
  | { kind: "caught-up"; name: string; recovery: Recovery }
  | { kind: "renumbered"; name: string; epoch: string; seq: number }
  | { kind: "shutdown"; done: () => void };

const log = getLogger(["relay", "hub"]);

let hostOf: (hub: Hub) => ClientHost;
let linkOf: (hub: Hub) => LinkHost;

/**
 * What a link (the Redis broker, go-ws's bridge) calls on its hub: the
 * narrow side of the link contract, so a link needs none of the hub.
 */
export interface LinkHost {
  /** Queues messages another hub accepted, for this hub's clients; see {@link Hub.deliver}. */
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

/**
 * Channels, clients and fan-out. Dispatches `connect` and `disconnect`
 * events (`CustomEvent<ClientEventDetail>`) as clients come and go,
 * `replayed` events (`CustomEvent<ReplayEventDetail>`) as recoveries finish
 * sending, and, with a broker, `broker` events (`CustomEvent<{ up: boolean }>`)
 * as it comes and goes.
 */
export class Hub extends EventTarget {
  static {
    hostOf = (hub) => hub.#clientHost;
    linkOf = (hub) => hub.#linkHost;
  }
  /** The counters this hub adds to. */
  readonly stats: RelayStats = new RelayStats();
  /** Resolves when the hub's loop has stopped after {@link shutdown}. */
  readonly finished: Promise<void>;
  /** Identifies this run of the channels' histories. */
  readonly epoch: string;
  readonly #echo: boolean;
  readonly #json: boolean;
  readonly #goWs: boolean;
  readonly #historySize: number;
  readonly #historyTtlMs: number;
  readonly #historyMaxBytes: number;
  /** How far a replay may fall behind the live stream: `maxReplayBytes` plus a connection's slack. */
  readonly #maxBehindBytes: number;
  readonly #maxChannels: number;
  /** Every channel's history bytes, under `maxHistoryBytesTotal`. */
  readonly #ledger: HistoryLedger;
  readonly #link: HubLink | undefined;
  /** Whether a broker numbers `json` channels (and keeps their history) for every instance. */
  readonly #brokered: boolean;
  readonly #clients = new Set<Client>();
  /** What this hub's link calls; see {@link linkHost}. */
  readonly #linkHost: LinkHost = {
    deliver: (messages) => this.deliver(messages),
    catchUp: () => this.#push({ kind: "catch-up" }),
    renumbered: (name, epoch, seq) => this.#push({ kind: "renumbered", name, epoch, seq }),
    linkState: (up) => this.dispatchEvent(new CustomEvent("broker", { detail: { up } })),
  };
  /** What this hub's clients call; see {@link clientHost}. */
  readonly #clientHost: ClientHost = {
    register: (client) => this.#push({ kind: "register", client }),
    // A client not registered is ignored.
    unregister: (client, reason) => this.#push({ kind: "unregister", client, reason }),
    receive: (client, data, bytes) => {
      this.stats.bytesReceived += bytes;
      this.#push({ kind: "broadcast", from: client, room: client.room, data, bytes });
    },
    command: (client, command, bytes) => {
      this.stats.bytesReceived += bytes;
      this.#push({ kind: "command", client, command });
    },
    refused: (code) => this.stats.refused[code]++,
    drained: (client) => this.#push({ kind: "drained", client }),
  };
  readonly #channels = new Map<string, Channel>();
  readonly #queue = new AsyncQueue<HubEvent>();
  readonly #sweeper: ReturnType<typeof setInterval> | undefined;
  /** Messages of the current batch for {@link #link}. */
  #outbox: RelayMessage[] = [];
  #transferable: ArrayBuffer[] = [];
  /** `json` publishes of the current batch for other sequencing hubs, by index. */
  #requests = new Map<number, RelayMessage[]>();
  /** The replays in flight, paced by their clients' sockets. */
  readonly #pacer: ReplayPacer;
  #shuttingDown = false;

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
      epoch = crypto.randomUUID().slice(0, 8),
      link,
    } = options;
    this.#echo = echo;
    this.#json = protocol === "json";
    this.#goWs = protocol === "go-ws";
    this.#historySize = historySize;
    this.#historyTtlMs = historyTtlMs;
    this.#historyMaxBytes = historyMaxBytes;
    this.#pacer = new ReplayPacer({
      maxReplayBytes,
      maxHistoryBytesTotal,
      onOverBudget: (client) => this.#close(client, "slow_consumer"),
      onReplayed: ({ client, name, history, held }) => {
        const detail: ReplayEventDetail = { client, channel: name, messages: history, held };
        this.dispatchEvent(new CustomEvent("replayed", { detail }));
      },
    });
    this.#maxBehindBytes = maxReplayBytes + replaySlackBytes;
    this.#maxChannels = maxChannelsPerConnection;
    this.#ledger = new HistoryLedger({ maxBytes: maxHistoryBytesTotal, counts: this.stats });
    this.epoch = epoch;
    this.#link = link;
    this.#brokered = link?.recover !== undefined;
    if (this.#json && historySize > 0) {
      // Expired history goes even from channels nobody publishes to any more.
      const sweeper = setInterval(() => this.#sweep(), Math.min(historyTtlMs, 60_000));
      Deno.unrefTimer(sweeper);
      this.#sweeper = sweeper;
    }
    this.finished = this.#run();
  }

  /** Clients registered right now. */
  get size(): number {
    return this.#clients.size;
  }

  /** Calls `hook` for each client that connects; returns a function that stops it. */
  onConnect(hook: (client: Client) => void): () => void {
    const listener = (event: Event) =>
      hook((event as CustomEvent<ClientEventDetail>).detail.client);
    this.addEventListener("connect", listener);
    return () => this.removeEventListener("connect", listener);
  }

  /** Calls `hook` for each client that leaves, with why; returns a function that stops it. */
  onDisconnect(hook: (client: Client, reason: DisconnectReason) => void): () => void {
    const listener = (event: Event) => {
      const { client, reason } = (event as CustomEvent<ClientEventDetail>).detail;
      hook(client, reason!);
    };
    this.addEventListener("disconnect", listener);
    return () => this.removeEventListener("disconnect", listener);
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
      this.#push({ kind: "publish", channel, data: JSON.stringify(data), done: resolve });
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

  /** The hub's loop: drains the queue in batches until {@link shutdown}; its only consumer. */
  async #run(): Promise<void> {
    for await (const batch of this.#queue) {
      for (const event of batch) this.#handle(event);
      this.#flush();
    }
    clearInterval(this.#sweeper);
  }

  /** {@link shutdown}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }

  #handle(event: HubEvent): void {
    switch (event.kind) {
      case "broadcast": {
        this.stats.messages++;
        const { from, room, data, bytes } = event;
        const skip = this.#echo ? undefined : from;
        const delivered = this.#fanOut(room, new Outbound(data, bytes), skip);
        event.done?.(delivered);
        if (this.#link !== undefined) {
          this.#outbox.push({ room, data, bytes });
          if (from !== undefined && typeof data !== "string") this.#transferable.push(data);
        }
        return;
      }
      case "command":
        return this.#command(event.client, event.command);
      case "publish":
        return event.done(this.#publishJson(event.channel, event.data));
      case "remote":
        for (const message of event.messages) this.#remote(message);
        return;
      case "recovered":
        return this.#recovered(event.command, event.recovery, event.replay);
      case "drained":
        return this.#pacer.pump(event.client);
      case "catch-up":
        return this.#catchUp();
      case "caught-up":
        return this.#caughtUp(event.name, event.recovery);
      case "renumbered":
        return this.#renumbered(event.name, event.epoch, event.seq);
      case "register":
        return this.#add(event.client);
      case "unregister":
        return this.#remove(event.client, event.reason);
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

  /** Hands the batch's messages to the link: one call per batch, not per message. */
  #flush(): void {
    if (this.#outbox.length > 0) {
      this.#link!.forward(this.#outbox, this.#transferable);
      this.#outbox = [];
      this.#transferable = [];
    }
    if (this.#requests.size > 0) {
      for (const [index, messages] of this.#requests) this.#link!.sendTo(index, messages);
      this.#requests = new Map();
    }
  }

  #command(client: Client, command: Exclude<Command, { type: "ping" }>): void {
    if (!this.#clients.has(client)) return;
    switch (command.type) {
      case "subscribe":
        return this.#subscribe(client, command);
      case "unsubscribe": {
        const channel = this.#channels.get(command.channel);
        if (channel?.members.delete(client)) {
          client.channels.delete(command.channel);
          this.#pacer.cancel(channel, client);
          channel.floors.delete(client);
          this.#dropIfUnused(command.channel, channel);
        }
        // go-ws: unsubscribing is silent.
        if (this.#goWs) return;
        return client.reply(encodeUnsubscribed(command.channel, command.id));
      }
      case "publish":
        this.#publishJson(command.channel, command.data, client);
    }
  }

  #subscribe(client: Client, command: Extract<Command, { type: "subscribe" }>): void {
    const { channel: name, since, epoch, id } = command;
    // go-ws's own cap and silence (gows.ts), before the json mode's.
    if (this.#goWs) return this.#subscribeGoWs(client, name);
    const max = this.#maxChannels;
    if (max > 0 && client.channels.size >= max && !client.channels.has(name)) {
      this.stats.refused.too_many_channels++;
      return client.reply(encodeError({
        type: "error",
        code: "too_many_channels",
        message: `a connection may be in at most ${max} channels; unsubscribe from one first`,
        id,
      }));
    }
    const channel = this.#channel(name);
    // Subscribing again starts over: the new answer says what follows it.
    this.#pacer.cancel(channel, client);
    channel.members.add(client);
    client.channels.add(name);
    const link = this.#link;
    if (link?.recover !== undefined) {
      // The broker knows the channel's seq, epoch and history; live messages
      // for this client wait in the replay until its answer is in (see #recovered).
      const replay = newReplay(client, name, channel);
      channel.pending.set(client, replay);
      link.recover(name, since).then(
        (recovery) => this.#push({ kind: "recovered", client, command, recovery, replay }),
        () => this.#push({ kind: "recovered", client, command, recovery: undefined, replay }),
      );
      return;
    }
    const state = since === undefined
      ? { seq: channel.lastSeq, epoch: this.epoch, entries: [], complete: false }
      : historyState(channel, since, this.epoch);
    const { entries, bytes } = this.#answer(client, name, id, state, since, epoch);
    if (entries.length === 0) return;
    const replay = newReplay(client, name, channel);
    replay.entries = entries;
    replay.history = entries.length;
    replay.historyBytes = bytes;
    replay.lastSeq = channel.lastSeq;
    replay.waiting = false;
    channel.pending.set(client, replay);
    this.#pacer.start(replay);
  }

  /** A go-ws subscribe: silent, capped as go-ws caps it, with nothing to recover. */
  #subscribeGoWs(client: Client, name: string): void {
    // The shared room is one of the client's channels, hence `>`.
    if (!client.channels.has(name) && client.channels.size > GO_WS_MAX_SUBSCRIPTIONS) {
      this.stats.refused.too_many_channels++;
      return client.reply(encodeGoWsLimitError());
    }
    this.#channel(name).members.add(client);
    client.channels.add(name);
  }

  /**
   * Answers a subscribe once the broker has: the reply, then the replay and
   * the live messages that arrived meanwhile, each seq once and in order,
   * paced like any replay.
   */
  #recovered(
    command: Extract<Command, { type: "subscribe" }>,
    recovery: Recovery | undefined,
    replay: Replay,
  ): void {
    const { since, epoch, id } = command;
    const { client, name, channel } = replay;
    // Gone, unsubscribed, or subscribed again while the broker answered.
    if (channel.pending.get(client) !== replay) return;
    // Without the broker this hub vouches only for what it saw, under the epoch it saw it.
    const state = recovery ?? localState(channel, since, epoch);
    const waited = replay.entries as HistoryEntry[];
    const answer = this.#answer(client, name, id, state, since, epoch);
    // A copy: the held live messages are appended to it, and a broker's entries are its own.
    const entries = [...answer.entries];
    const bytes = answer.bytes;
    replay.history = entries.length;
    replay.historyBytes = bytes;
    // The broker's answer may already hold some of the live messages that waited.
    let last = state.seq;
    let heldBytes = 0;
    let held = 0;
    for (const entry of waited) {
      if (entry.seq <= last) continue;
      entries.push(entry);
      heldBytes += encoded(entry).bytes;
      held++;
      last = entry.seq;
    }
    replay.entries = entries;
    replay.heldBytes = heldBytes;
    replay.held = held;
    replay.lastSeq = last;
    replay.epoch = state.epoch;
    replay.waiting = false;
    this.#pacer.start(replay);
  }

  #catchUp(): void {
    const link = this.#link;
    if (link?.recover === undefined) return;
    // Channels numbered here meanwhile too: Redis numbers them again, under an epoch to learn.
    for (const [name, channel] of this.#channels) {
      if (channel.epoch === "" || channel.members.size === 0) continue;
      link.recover(name, channel.lastSeq).then(
        (recovery) => this.#push({ kind: "caught-up", name, recovery }),
        // The broker is gone again: the channel's next message will show the gap.
        () => {},
      );
    }
  }

  /**
   * Delivers what the history holds after the channel's last message, as if
   * from the bus. Entries of the bus meanwhile come first or are skipped as
   * already delivered; a history of another epoch says nothing about this one.
   * (Entries carry no sender: with echo off, a sender may get its own message back here.)
   */
  #caughtUp(name: string, recovery: Recovery): void {
    const channel = this.#channels.get(name);
    if (channel === undefined || channel.epoch === "") return;
    // Renumbered while the bus was out of reach (Redis lost its data, or was given a new epoch).
    if (channel.epoch !== recovery.epoch) {
      return this.#renumbered(name, recovery.epoch, recovery.seq);
    }
    for (const entry of recovery.entries) {
      if (entry.seq <= channel.lastSeq) continue;
      channel.lastSeq = entry.seq;
      this.#fanOut(name, encoded(entry), undefined, entry.seq);
    }
  }

  /**
   * Tells the channel's subscribers that its numbering changed under them:
   * an unasked `subscribed` with `recovered: false` at the new position
   * (clients whose own subscribe is in flight get its answer instead).
   */
  #renumbered(name: string, epoch: string, seq: number): void {
    const channel = this.#channels.get(name);
    // Old news: a catch-up that read Redis before the channel moved on.
    if (channel === undefined || channel.epoch === epoch || channel.retired.includes(epoch)) return;
    channel.numbering = false;
    moveTo(channel, epoch, seq);
    const notice = encodeSubscribed({ channel: name, seq, epoch, recovered: false });
    for (const member of channel.members) {
      if (!channel.pending.has(member)) member.reply(notice);
    }
  }

  /**
   * Replies to a subscribe from the channel's `state`, by the one rule of
   * {@link subscribeAnswer}, and returns what to replay.
   */
  #answer(
    client: Client,
    name: string,
    id: RequestId | undefined,
    state: Recovery,
    since: number | undefined,
    epoch: string | undefined,
  ): { entries: HistoryEntry[]; bytes: number } {
    const answer = subscribeAnswer(state, since, epoch, (bytes) => this.#pacer.affordable(bytes));
    const { recovered } = answer;
    client.reply(
      encodeSubscribed({ channel: name, seq: state.seq, epoch: state.epoch, recovered, id }),
    );
    return answer;
  }

  /**
   * Numbers, keeps and delivers a `json` publish, or passes it to the hub
   * that sequences its channel. Returns this hub's deliveries.
   */
  #publishJson(
    name: string,
    data: string,
    sender?: Client | string,
    origin?: number,
  ): number {
    // Counted where it was accepted, whoever numbers it (a worker, Redis, this hub).
    if (origin === undefined) this.stats.messages++;
    const owner = this.#sequencer(name);
    const senderId = typeof sender === "string" ? sender : sender?.id;
    if (owner !== undefined) {
      const requests = this.#requests.get(owner) ?? [];
      this.#requests.set(owner, requests);
      requests.push({
        room: name,
        data,
        bytes: 0,
        request: true,
        origin: this.#link!.index,
        sender: senderId,
      });
      return 0;
    }
    const channel = this.#channel(name);
    if (!channel.numbering) numberLocally(channel);
    const seq = ++channel.lastSeq;
    const time = Date.now();
    channel.lastTime = time;
    const frame = encodeMessage(name, data, seq, time, channel.epoch);
    const bytes = utf8Length(frame);
    const message = new Outbound(frame, bytes);
    channel.history?.push({ seq, time, frame, message }, bytes);
    const skip = this.#echo ? undefined : this.#local(name, sender, origin);
    const delivered = this.#fanOut(name, message, skip, seq);
    if (this.#link !== undefined) {
      const from = origin ?? this.#link.index;
      this.#outbox.push({
        room: name,
        data: frame,
        bytes,
        seq,
        epoch: channel.epoch,
        time,
        origin: from,
        sender: senderId,
      });
    }
    this.#dropIfUnused(name, channel);
    return delivered;
  }

  /** The target that numbers `channel`'s messages, or `undefined` when it is this hub. */
  #sequencer(channel: string): number | undefined {
    return this.#json ? this.#link?.sequencerFor(channel) : undefined;
  }

  #remote(message: RelayMessage): void {
    const { room, data, bytes, seq, epoch = this.epoch, time, origin, sender } = message;
    if (message.request) {
      this.#publishJson(room, data as string, sender, origin);
      return;
    }
    const skip = this.#echo ? undefined : this.#local(room, sender, origin);
    if (seq !== undefined) {
      // A replica of the sequencing hub's history, so clients here recover locally.
      const channel = this.#channel(room);
      if (this.#brokered) {
        // Sent to Redis before it stalled and numbered after this hub moved on (to its own
        // numbering, or Redis's next): its clients would get it after newer messages. They
        // were told to resync when the channel moved on; other instances' clients get it.
        if (channel.retired.includes(epoch)) return;
        // Delivered already, by a catch-up from the broker's history.
        if (epoch === channel.epoch && seq <= channel.lastSeq) return;
        channel.numbering = false;
      }
      moveTo(channel, epoch, seq);
      channel.lastTime = time!;
      const message = new Outbound(data, bytes);
      channel.history?.push({ seq, time: time!, frame: data as string, message }, bytes);
      this.#fanOut(room, message, skip, seq);
      this.#dropIfUnused(room, channel);
      return;
    }
    this.#fanOut(room, new Outbound(data, bytes), skip);
  }

  /**
   * The client of this hub that sent a message, to skip when echo is off.
   * Other workers name it by id, unique per worker only (hence the origin
   * check); finding it scans the room once per message, and only then.
   */
  #local(room: string, sender: Client | string | undefined, origin?: number): Client | undefined {
    if (typeof sender !== "string") return origin === undefined ? sender : undefined;
    if (origin !== this.#link?.index) return undefined;
    for (const member of this.#channels.get(room)?.members ?? []) {
      if (member.id === sender) return member;
    }
    return undefined;
  }

  /**
   * Sends to every member of `room` but `skip`; returns how many got it. The
   * message's frame is encoded once, on the first send, for all of them.
   */
  #fanOut(room: string, message: Outbound, skip?: Client, seq?: number): number {
    const channel = this.#channels.get(room);
    if (channel === undefined) return 0;
    // Only while a broker recovery is in flight or just done; never in raw mode.
    const gated = seq !== undefined && (channel.pending.size > 0 || channel.floors.size > 0);
    let delivered = 0;
    for (const target of channel.members) {
      if (target === skip) continue;
      if (gated) {
        const verdict = gate(channel, target, seq, message, this.#maxBehindBytes);
        if (verdict === "overrun") this.#close(target, "slow_consumer");
        if (verdict !== "send") continue;
      }
      const result = target.send(message);
      if (result === "sent") delivered++;
      else if (result === "over_budget") this.#close(target, "slow_consumer");
    }
    const stats = this.stats;
    stats.deliveries += delivered;
    stats.bytesSent += delivered * message.bytes;
    return delivered;
  }

  #channel(name: string): Channel {
    let channel = this.#channels.get(name);
    if (channel === undefined) {
      const history = this.#json && this.#historySize > 0
        ? {
          size: this.#historySize,
          ttlMs: this.#historyTtlMs,
          maxBytes: this.#historyMaxBytes,
          ledger: this.#ledger,
        }
        : undefined;
      // Without a broker this hub numbers every channel it sequences, under its own epoch.
      channel = newChannel({
        epoch: this.#brokered ? "" : this.epoch,
        numbering: !this.#brokered,
        history,
      });
      this.#channels.set(name, channel);
    }
    return channel;
  }

  /**
   * Forgets a channel with no members and nothing to recover. One whose
   * history a byte bound emptied is kept until its last message is past the
   * TTL: until then its seq must answer a recovery with `recovered: false`,
   * not pass for a new channel with nothing missed.
   */
  #dropIfUnused(name: string, channel: Channel): void {
    if (channel.members.size > 0 || channel.history?.length) return;
    if (channel.history !== undefined && Date.now() - channel.lastTime < this.#historyTtlMs) return;
    this.#channels.delete(name);
  }

  #sweep(): void {
    const now = Date.now();
    for (const [name, channel] of this.#channels) {
      channel.history?.expire(now);
      this.#dropIfUnused(name, channel);
    }
  }

  #add(client: Client): void {
    this.#clients.add(client);
    if (!client.json) {
      this.#channel(client.room).members.add(client);
      client.channels.add(client.room);
    }
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
    if (!this.#clients.delete(client)) return;
    for (const name of client.channels) {
      const channel = this.#channels.get(name)!;
      channel.members.delete(client);
      this.#pacer.cancel(channel, client);
      channel.floors.delete(client);
      this.#dropIfUnused(name, channel);
    }
    client.channels.clear();
    this.#pacer.forget(client);
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
    client.close(reason);
  }
}
