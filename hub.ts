/**
 * The hub: the only owner of channels and their clients. Register,
 * unregister, subscribe, publish and broadcast go through one ordered queue
 * drained by {@link Hub.run}, so a client registered (or subscribed) before
 * a message is queued receives it and one that is gone does not. Fan-out
 * hands the same `string | ArrayBuffer` to every socket; a client over its
 * send budget is closed with 1013 rather than allowed to hold the broadcast
 * or the server's memory hostage.
 *
 * In `raw` mode a client is in exactly one channel, its room (`""`, or its
 * path with `rooms: path`), and frames are relayed untouched. In `json` mode
 * clients subscribe to channels; each message gets the channel's next `seq`
 * and is kept in the channel's {@link History} for clients that reconnect.
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
import { type Client, type ClientHost, CloseCode } from "./client.ts";
import { Outbound, utf8Length } from "./engine/frame.ts";
import { History, type HistoryEntry } from "./history.ts";
import {
  type Command,
  encodeMessage,
  encodeSubscribed,
  encodeUnsubscribed,
  type ProtocolErrorCode,
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

/** `detail` of the hub's `connect` and `disconnect` events. */
export interface ClientEventDetail {
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
  room: string;
  data: string | ArrayBuffer;
  bytes: number;
  /** The frame's seq in its channel (`json` mode). */
  seq?: number;
  /** When the frame was accepted, ms since the epoch (`json` mode). */
  time?: number;
  /** A publish for the sequencing hub to number and send on. */
  request?: boolean;
  /** With `request`: number it here whoever the sequencer is (sending it there failed). */
  local?: boolean;
  /** The hub that accepted it and its sending client, skipped there when echo is off. */
  origin?: number;
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
   */
  recover?(channel: string, since: number | undefined): Promise<Recovery>;
}

/** A channel's state as a broker keeps it, for a subscribe. */
export interface Recovery {
  seq: number;
  epoch: string;
  /** Entries after `since`, oldest first. */
  entries: HistoryEntry[];
  /** False when some messages after `since` are no longer kept (or the broker is down). */
  complete: boolean;
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
  }
  | { kind: "shutdown"; done: () => void };

/** A channel's members, and in `json` mode its sequence and history. */
interface Channel {
  readonly members: Set<Client>;
  lastSeq: number;
  readonly history: History | undefined;
  /** Members whose recovery from a broker is in flight: their live messages wait here. */
  readonly pending: Map<Client, HistoryEntry[]>;
  /** Members a recovery already sent everything up to this seq (the live stream may lag). */
  readonly floors: Map<Client, number>;
}

const log = getLogger(["relay", "hub"]);

/**
 * Channels, clients and fan-out. Dispatches `connect` and `disconnect`
 * events (`CustomEvent<ClientEventDetail>`) as clients come and go, and,
 * with a broker, `broker` events (`CustomEvent<{ up: boolean }>`) as it
 * comes and goes.
 */
export class Hub extends EventTarget implements ClientHost {
  /** The counters this hub adds to. */
  readonly stats: RelayStats = new RelayStats();
  /** Resolves when {@link run} has returned after {@link shutdown}. */
  readonly finished: Promise<void>;
  /** Identifies this run of the channels' histories. */
  readonly epoch: string;
  readonly #echo: boolean;
  readonly #json: boolean;
  readonly #goWs: boolean;
  readonly #historySize: number;
  readonly #historyTtlMs: number;
  readonly #link: HubLink | undefined;
  readonly #clients = new Set<Client>();
  readonly #channels = new Map<string, Channel>();
  readonly #queue = new AsyncQueue<HubEvent>();
  readonly #sweeper: ReturnType<typeof setInterval> | undefined;
  /** Messages of the current batch for {@link #link}. */
  #outbox: RelayMessage[] = [];
  #transferable: ArrayBuffer[] = [];
  /** `json` publishes of the current batch for other sequencing hubs, by index. */
  #requests = new Map<number, RelayMessage[]>();
  #shuttingDown = false;

  constructor(options: HubOptions = {}) {
    super();
    const {
      echo = true,
      protocol = "raw",
      historySize = 100,
      historyTtlMs = 300_000,
      epoch = crypto.randomUUID().slice(0, 8),
      link,
    } = options;
    this.#echo = echo;
    this.#json = protocol === "json";
    this.#goWs = protocol === "go-ws";
    this.#historySize = historySize;
    this.#historyTtlMs = historyTtlMs;
    this.epoch = epoch;
    this.#link = link;
    if (this.#json && historySize > 0) {
      // Expired history goes even from channels nobody publishes to any more.
      const sweeper = setInterval(() => this.#sweep(), Math.min(historyTtlMs, 60_000));
      Deno.unrefTimer(sweeper);
      this.#sweeper = sweeper;
    }
    this.finished = this.run();
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

  /** Queues `client` to join (its room, in `raw` mode). */
  register(client: Client): void {
    this.#push({ kind: "register", client });
  }

  /** Queues `client`'s removal, counted under `reason`. A client not registered is ignored. */
  unregister(client: Client, reason: DisconnectReason): void {
    this.#push({ kind: "unregister", client, reason });
  }

  /** Queues a `raw` frame that `client` sent, for everyone in its room. */
  receive(client: Client, data: string | ArrayBuffer, bytes: number): void {
    this.stats.bytesReceived += bytes;
    this.#push({ kind: "broadcast", from: client, room: client.room, data, bytes });
  }

  /** Queues a `json` subscribe, unsubscribe or publish from `client`. */
  command(client: Client, command: Exclude<Command, { type: "ping" }>, bytes: number): void {
    this.stats.bytesReceived += bytes;
    this.#push({ kind: "command", client, command });
  }

  /** Counts a frame refused with `code`. */
  refused(code: ProtocolErrorCode): void {
    this.stats.refused[code]++;
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

  /** The hub's loop: drains the queue in batches until {@link shutdown}. */
  async run(): Promise<void> {
    for await (const batch of this.#queue) {
      for (const event of batch) this.#handle(event);
      this.#flush();
    }
    clearInterval(this.#sweeper);
  }

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
        return this.#recovered(event.client, event.command, event.recovery);
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
          channel.pending.delete(client);
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
    if (this.#goWs) return this.#subscribeGoWs(client, name);
    const channel = this.#channel(name);
    channel.members.add(client);
    client.channels.add(name);
    const link = this.#link;
    if (link?.recover !== undefined) {
      // The broker knows the channel's seq, epoch and history; live messages
      // for this client wait until its answer is in (see #recovered).
      channel.pending.set(client, []);
      link.recover(name, since).then(
        (recovery) => this.#push({ kind: "recovered", client, command, recovery }),
        () => this.#push({ kind: "recovered", client, command, recovery: undefined }),
      );
      return;
    }
    if (since === undefined) {
      return client.reply(
        encodeSubscribed({ channel: name, seq: channel.lastSeq, epoch: this.epoch, id }),
      );
    }
    channel.history?.expire(Date.now());
    const replay = channel.history?.since(since, channel.lastSeq) ??
      { entries: [], complete: since === channel.lastSeq };
    const recovered = replay.complete && (epoch === undefined || epoch === this.epoch);
    client.reply(
      encodeSubscribed({ channel: name, seq: channel.lastSeq, epoch: this.epoch, recovered, id }),
    );
    // Replayed before any live message: the loop does nothing else meanwhile.
    for (const entry of recovered ? replay.entries : []) client.reply(encoded(entry));
  }

  /** A go-ws subscribe: silent, capped as go-ws caps it, with nothing to recover. */
  #subscribeGoWs(client: Client, name: string): void {
    // The shared room is one of the client's channels, hence `>`.
    if (!client.channels.has(name) && client.channels.size > GO_WS_MAX_SUBSCRIPTIONS) {
      this.stats.refused.forbidden++;
      return client.reply(encodeGoWsLimitError());
    }
    this.#channel(name).members.add(client);
    client.channels.add(name);
  }

  /**
   * Answers a subscribe once the broker has: the reply, the replay, then the
   * live messages that arrived meanwhile, each seq once and in order.
   */
  #recovered(
    client: Client,
    command: Extract<Command, { type: "subscribe" }>,
    recovery: Recovery | undefined,
  ): void {
    const { channel: name, since, epoch, id } = command;
    const channel = this.#channels.get(name);
    const waiting = channel?.pending.get(client);
    // Gone, or unsubscribed, while the broker answered.
    if (channel === undefined || waiting === undefined) return;
    channel.pending.delete(client);
    // Without the broker this hub cannot vouch for anything it did not see.
    const state = recovery ??
      { seq: channel.lastSeq, epoch: this.epoch, entries: [], complete: false };
    if (since === undefined) {
      client.reply(encodeSubscribed({ channel: name, seq: state.seq, epoch: state.epoch, id }));
    } else {
      const recovered = state.complete && (epoch === undefined || epoch === state.epoch);
      client.reply(
        encodeSubscribed({ channel: name, seq: state.seq, epoch: state.epoch, recovered, id }),
      );
      for (const entry of recovered ? state.entries : []) client.reply(encoded(entry));
    }
    let last = state.seq;
    for (const entry of waiting) {
      if (entry.seq <= last) continue;
      client.reply(encoded(entry));
      last = entry.seq;
    }
    if (channel.lastSeq < last) channel.floors.set(client, last);
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
    local = false,
  ): number {
    const owner = local ? undefined : this.#sequencer(name);
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
    this.stats.messages++;
    const channel = this.#channel(name);
    const seq = ++channel.lastSeq;
    const time = Date.now();
    const frame = encodeMessage(name, data, seq, time);
    const bytes = utf8Length(frame);
    const message = new Outbound(frame, bytes);
    channel.history?.push({ seq, time, frame, message });
    const skip = this.#echo ? undefined : this.#local(name, sender, origin);
    const delivered = this.#fanOut(name, message, skip, seq);
    if (this.#link !== undefined) {
      const from = origin ?? this.#link.index;
      this.#outbox.push({
        room: name,
        data: frame,
        bytes,
        seq,
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
    const { room, data, bytes, seq, time, origin, sender } = message;
    if (message.request) {
      this.#publishJson(room, data as string, sender, origin, message.local);
      return;
    }
    const skip = this.#echo ? undefined : this.#local(room, sender, origin);
    if (seq !== undefined) {
      // A replica of the sequencing hub's history, so clients here recover locally.
      const channel = this.#channel(room);
      channel.lastSeq = seq;
      const message = new Outbound(data, bytes);
      channel.history?.push({ seq, time: time!, frame: data as string, message });
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
      if (gated && this.#held(channel, target, seq, message)) continue;
      const result = target.send(message);
      if (result === "sent") delivered++;
      else if (result === "over_budget") this.#close(target, "slow_consumer");
    }
    const stats = this.stats;
    stats.deliveries += delivered;
    stats.bytesSent += delivered * message.bytes;
    return delivered;
  }

  /** Whether a recovery holds this message back from `target` (queued, or already sent). */
  #held(channel: Channel, target: Client, seq: number, message: Outbound): boolean {
    const waiting = channel.pending.get(target);
    if (waiting !== undefined) {
      waiting.push({ seq, time: 0, frame: message.data as string, message });
      return true;
    }
    const floor = channel.floors.get(target);
    if (floor === undefined) return false;
    if (seq <= floor) return true;
    channel.floors.delete(target);
    return false;
  }

  #channel(name: string): Channel {
    let channel = this.#channels.get(name);
    if (channel === undefined) {
      const history = this.#json && this.#historySize > 0
        ? new History(this.#historySize, this.#historyTtlMs)
        : undefined;
      channel = { members: new Set(), lastSeq: 0, history, pending: new Map(), floors: new Map() };
      this.#channels.set(name, channel);
    }
    return channel;
  }

  /** Forgets a channel with no members and nothing to recover. */
  #dropIfUnused(name: string, channel: Channel): void {
    if (channel.members.size === 0 && !(channel.history?.length)) this.#channels.delete(name);
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
      channel.pending.delete(client);
      channel.floors.delete(client);
      this.#dropIfUnused(name, channel);
    }
    client.channels.clear();
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

/** A history entry's frame, encoded once however many clients recover it. */
function encoded(entry: HistoryEntry): Outbound {
  return entry.message ??= new Outbound(entry.frame, utf8Length(entry.frame));
}
