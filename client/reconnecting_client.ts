/**
 * A client for the relay's channel protocol (`websocket.protocol: json`)
 * that stays connected: it reconnects with exponential backoff and jitter,
 * resubscribes its channels with `since` set to the last `seq` it saw, and
 * drops duplicates, so an application sees every message exactly once
 * across a dropped connection or a relay restart within the history window.
 * When the relay cannot replay everything, `onResync` says so instead of
 * messages going missing silently.
 *
 * It never drops a message silently: a message is a duplicate only when
 * its `epoch` is the one of the last message delivered and its `seq` is not
 * above that one's. Any other message that is not the next `seq` of the
 * same epoch (a gap, or a numbering that restarted) makes it resubscribe
 * with `since`: the relay fills the gap, or answers `recovered: false` and
 * `onResync` fires.
 *
 * It notices a dead path itself: browsers cannot see WebSocket pings, and a
 * path that dies without a FIN or RST (a NAT or a proxy that forgot it)
 * leaves a socket "open" for as long as the operating system's TCP timeouts.
 * After `pingIntervalMs` with nothing received it sends a `ping` envelope;
 * if nothing (a message, the `pong`) arrives within `pongTimeoutMs` more, it
 * drops the connection as abnormal (1006) and reconnects. So a dead path is
 * noticed within `2 * pingIntervalMs + pongTimeoutMs` (40 s by default),
 * and a connection that does not open within `connectTimeoutMs` is retried.
 *
 * Uses only the WebSocket and timer APIs that browsers have, so the same
 * file runs in Deno and, bundled (`deno task bundle`), in a page.
 *
 * @example
 * ```ts
 * import { ReconnectingClient } from "./reconnecting_client.ts";
 * const client = new ReconnectingClient("ws://127.0.0.1:8443/", {
 *   onMessage: (m) => console.log(m.channel, m.seq, m.data),
 * });
 * client.subscribe("process:proc-1");
 * ```
 * @module
 */

/** Where the client is in its connection's life. */
export type ConnectionState = "disconnected" | "connecting" | "connected";

/** A message published on a channel, as delivered. */
export interface ChannelMessage {
  /** The channel it was published on. */
  channel: string;
  /** The published value, parsed from JSON. */
  data: unknown;
  /** Its number in the channel's stream (within the current epoch). */
  seq: number;
  /** When the relay accepted it, ms since the epoch. */
  timestamp: number;
}

/** An `error` envelope from the relay. */
export interface RelayError {
  /** Why the frame was refused (`bad_json`, `forbidden`, ...). */
  code: string;
  /** A sentence for people. */
  message: string;
  /** The `id` of the command it answers, when that had one. */
  id?: string | number;
}

/** Timers and randomness, injectable so tests need not sleep. */
export interface Clock {
  /** Calls `callback` after `ms` and returns a handle for {@link Clock.clearTimeout}. */
  setTimeout(callback: () => void, ms: number): unknown;
  /** Cancels a timer {@link Clock.setTimeout} returned. */
  clearTimeout(handle: unknown): void;
  /** A number in [0, 1). */
  random(): number;
}

/** Options for a {@link ReconnectingClient}; every one is optional. */
export interface ReconnectingClientOptions {
  /**
   * A token for `auth.mode` (an API key or a JWT), sent as the subprotocol
   * entry `bearer.<token>`: the one place a browser's WebSocket can carry it.
   */
  token?: string;
  /**
   * `Sec-WebSocket-Protocol` entries to offer. Whenever a token is offered
   * (`token`, or a `bearer.` entry here) and no other entry is, `relay` is
   * offered too: the relay answers with a non-token entry and refuses (400)
   * a client that offers a token alone.
   */
  protocols?: string[];
  /** First retry delay, ms. @default 1000 */
  initialDelayMs?: number;
  /** Longest retry delay, ms. @default 30000 */
  maxDelayMs?: number;
  /** Growth of the delay per failed attempt. @default 2 */
  factor?: number;
  /** Attempts after a drop before giving up; `Infinity`: never. @default Infinity */
  maxRetries?: number;
  /**
   * Silence after which the client sends a `ping` envelope, ms (silence is
   * checked once per interval, so a ping goes out after one to two
   * intervals of it); 0: never.
   * @default 15000
   */
  pingIntervalMs?: number;
  /**
   * How long after its ping something must arrive (a message, the `pong`),
   * ms; else the path is dead: the connection is dropped (1006) and retried.
   * @default 10000
   */
  pongTimeoutMs?: number;
  /** How long a connection may take to open before it is retried, ms; 0: no limit. @default 10000 */
  connectTimeoutMs?: number;
  /** Each time a connection opens. */
  onConnect?(): void;
  /**
   * Each time a connection is lost (or closed by {@link ReconnectingClient.close}).
   * `code` is the close code, or 1006 for an abnormal close (no close frame, a
   * dead path) whatever the runtime reports for it.
   */
  onDisconnect?(event: { code: number; reason: string }): void;
  /** When a connection opens after a drop, with the attempt that succeeded (1 is the first). */
  onReconnect?(attempt: number): void;
  /**
   * When the relay confirms a (re)subscription; messages published from then
   * on will arrive. `recovered` is set on resubscriptions.
   */
  onSubscribed?(channel: string, recovered: boolean | undefined): void;
  /** Each channel message, once, in `seq` order. */
  onMessage?(message: ChannelMessage): void;
  /** The relay could not replay everything since the last seen `seq`: resync `channel`. */
  onResync?(channel: string): void;
  /** An `error` envelope from the relay. */
  onError?(error: RelayError): void;
  /** When retries are exhausted. */
  onGiveUp?(): void;
  /** The WebSocket constructor to use. @default globalThis.WebSocket */
  WebSocket?: typeof WebSocket;
  /** Timers and randomness, for tests. @default the global timers and Math.random */
  clock?: Clock;
}

/**
 * Where a channel's stream stands: the last `seq` handed to the application
 * (or, before any message, the `seq` the relay reported on subscribing) and
 * the `epoch` it belongs to. A resubscribe asks for exactly what came after.
 */
export interface Position {
  /** The last `seq` handed to the application. */
  seq: number;
  /** The numbering `seq` belongs to. */
  epoch: string;
}

/** A subscribed channel: its {@link Position} (none before the first `subscribed` without a starting one). */
interface ChannelState extends Partial<Position> {
  /**
   * A subscribe is on its way: messages are ignored until its answer, which
   * comes before the replay of everything after `seq` (or says there is none).
   */
  awaiting: boolean;
  /**
   * After `recovered: true`: the seq the replay reaches. A gap before it
   * means the relay could not replay after all; asking again would loop.
   */
  replayUntil?: number;
}

/** The subprotocol offered beside a token, for the relay to answer with. */
const RELAY_SUBPROTOCOL = "relay";

const BEARER_PREFIX = "bearer.";

/** What the client offers as `Sec-WebSocket-Protocol`, per {@link ReconnectingClientOptions.protocols}. */
function offeredSubprotocols(options: ReconnectingClientOptions): string[] {
  const offered = [...options.protocols ?? []];
  if (options.token !== undefined) offered.push(BEARER_PREFIX + options.token);
  const isToken = (entry: string) => entry.toLowerCase().startsWith(BEARER_PREFIX);
  if (offered.length > 0 && offered.every(isToken)) offered.unshift(RELAY_SUBPROTOCOL);
  return offered;
}

const GLOBAL_CLOCK: Clock = {
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as number),
  random: () => Math.random(),
};

/** A channel-protocol client that reconnects and recovers; see the module doc. */
export class ReconnectingClient {
  /** The relay's URL, as given. */
  readonly url: string;
  readonly #options: ReconnectingClientOptions;
  readonly #protocols: string[];
  readonly #clock: Clock;
  readonly #channels = new Map<string, ChannelState>();
  #socket: WebSocket | undefined;
  #state: ConnectionState = "disconnected";
  /** Failed attempts since the last open; 0 while connected. */
  #attempt = 0;
  #everConnected = false;
  #droppedSinceOpen = false;
  #timer: unknown;
  /** The connect deadline, the silence check, or the pong deadline: one at a time. */
  #liveness: unknown;
  /** Whether anything arrived since the silence check was last armed. */
  #heard = false;
  #closed = false;

  /** Connects to `url` at once, and again whenever the connection is lost. */
  constructor(url: string, options: ReconnectingClientOptions = {}) {
    this.url = url;
    this.#options = options;
    this.#protocols = offeredSubprotocols(options);
    this.#clock = options.clock ?? GLOBAL_CLOCK;
    this.#connect();
  }

  /** Where the connection stands. */
  get state(): ConnectionState {
    return this.#state;
  }

  /**
   * Subscribes to `channel` now if connected, and after every reconnect,
   * asking for what was missed. `from` is where an earlier client stopped
   * (its {@link position}, kept by a page across a reload, say): the relay
   * replays what came after it, or answers `recovered: false` (and
   * {@link ReconnectingClientOptions.onResync} fires) when it cannot.
   * Without it the stream starts now.
   */
  subscribe(channel: string, from?: Position): void {
    if (this.#channels.has(channel)) return;
    this.#channels.set(
      channel,
      from === undefined
        ? { awaiting: false }
        : { seq: from.seq, epoch: from.epoch, awaiting: false },
    );
    if (this.#state === "connected") this.#sendSubscribe(channel);
  }

  /**
   * Where `channel`'s stream stands, to hand to {@link subscribe} later;
   * `undefined` when not subscribed or before the relay's first answer.
   */
  position(channel: string): Position | undefined {
    const position = this.#channels.get(channel);
    if (position?.seq === undefined || position.epoch === undefined) return undefined;
    return { seq: position.seq, epoch: position.epoch };
  }

  /** Stops receiving `channel`. */
  unsubscribe(channel: string): void {
    if (!this.#channels.delete(channel)) return;
    if (this.#state === "connected") this.send(JSON.stringify({ type: "unsubscribe", channel }));
  }

  /** Publishes `data` on `channel`; throws while disconnected. */
  publish(channel: string, data: unknown): void {
    this.send(JSON.stringify({ type: "publish", channel, data }));
  }

  /**
   * Sends a raw text frame. Throws while not connected rather than queueing,
   * so the application decides what a message sent during an outage means.
   */
  send(text: string): void {
    if (this.#state !== "connected") {
      throw new Error(
        `ReconnectingClient is ${this.#state}: cannot send until it is connected (see onConnect)`,
      );
    }
    this.#socket!.send(text);
  }

  /** Closes for good: no more reconnects. */
  close(): void {
    this.#closed = true;
    this.#clock.clearTimeout(this.#timer);
    this.#clock.clearTimeout(this.#liveness);
    this.#socket?.close(1000, "client closed");
  }

  /** The delay before retry `attempt` (1-based): exponential, capped, with jitter. */
  delayFor(attempt: number): number {
    const { initialDelayMs = 1000, maxDelayMs = 30_000, factor = 2 } = this.#options;
    const ceiling = Math.min(maxDelayMs, initialDelayMs * factor ** (attempt - 1));
    // "Equal jitter": at least half the ceiling, so retries never bunch at zero.
    return ceiling / 2 + this.#clock.random() * (ceiling / 2);
  }

  #connect(): void {
    this.#state = "connecting";
    const Socket = this.#options.WebSocket ?? WebSocket;
    const socket = new Socket(this.url, this.#protocols);
    this.#socket = socket;
    socket.onopen = () => this.#onOpen();
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onclose = (event) => this.#onClose(event.code, event.reason);
    const { connectTimeoutMs = 10_000 } = this.#options;
    if (connectTimeoutMs > 0) {
      this.#liveness = this.#clock.setTimeout(
        () => this.#abandon(socket, `not open within ${connectTimeoutMs} ms`),
        connectTimeoutMs,
      );
    }
  }

  /** Checks for silence after the next interval. */
  #armSilenceCheck(): void {
    const { pingIntervalMs = 15_000 } = this.#options;
    if (pingIntervalMs <= 0) return;
    this.#heard = false;
    this.#liveness = this.#clock.setTimeout(() => this.#silenceCheck(), pingIntervalMs);
  }

  /**
   * A whole interval has passed: if nothing arrived, ask with a ping, and
   * drop the connection if nothing arrives within `pongTimeoutMs` either.
   * A flag read once per interval rather than a timer reset per message:
   * messages cost nothing here.
   */
  #silenceCheck(): void {
    if (this.#heard) return this.#armSilenceCheck();
    const socket = this.#socket!;
    socket.send('{"type":"ping"}');
    const { pongTimeoutMs = 10_000 } = this.#options;
    this.#liveness = this.#clock.setTimeout(() => {
      if (this.#heard) return this.#armSilenceCheck();
      this.#abandon(socket, `nothing received within ${pongTimeoutMs} ms of a ping`);
    }, pongTimeoutMs);
  }

  /**
   * Gives up on `socket` without waiting for its close, which on a dead path
   * could take minutes: it is closed in the background and never heard from
   * again, and the client carries on as after an abnormal close.
   */
  #abandon(socket: WebSocket, reason: string): void {
    if (this.#socket !== socket) return;
    socket.onopen = socket.onmessage = socket.onclose = null;
    try {
      socket.close();
    } catch {
      // Closing a socket the runtime already gave up on.
    }
    this.#onClose(1006, reason);
  }

  #onOpen(): void {
    this.#clock.clearTimeout(this.#liveness);
    this.#armSilenceCheck();
    this.#state = "connected";
    const attempt = this.#attempt;
    this.#attempt = 0;
    for (const channel of this.#channels.keys()) this.#sendSubscribe(channel);
    this.#options.onConnect?.();
    if (this.#everConnected && this.#droppedSinceOpen) this.#options.onReconnect?.(attempt);
    this.#everConnected = true;
    this.#droppedSinceOpen = false;
  }

  #onClose(runtimeCode: number, reason: string): void {
    this.#clock.clearTimeout(this.#liveness);
    // Deno reports 0 for a connection that ended without a close frame; browsers and ws say 1006.
    const code = runtimeCode >= 1000 && runtimeCode <= 4999 ? runtimeCode : 1006;
    const wasConnected = this.#state === "connected";
    this.#state = "disconnected";
    this.#socket = undefined;
    if (wasConnected) this.#options.onDisconnect?.({ code, reason });
    if (this.#closed) return;
    this.#droppedSinceOpen = true;
    const { maxRetries = Infinity } = this.#options;
    if (this.#attempt >= maxRetries) return this.#options.onGiveUp?.();
    this.#attempt++;
    this.#timer = this.#clock.setTimeout(() => this.#connect(), this.delayFor(this.#attempt));
  }

  #sendSubscribe(channel: string): void {
    const state = this.#channels.get(channel)!;
    state.awaiting = true;
    state.replayUntil = undefined;
    const { seq, epoch } = state;
    this.send(JSON.stringify({ type: "subscribe", channel, since: seq, epoch }));
  }

  #onMessage(data: unknown): void {
    this.#heard = true;
    if (typeof data !== "string") return;
    const envelope = JSON.parse(data);
    switch (envelope.type) {
      case "message": {
        const state = this.#channels.get(envelope.channel);
        // Not subscribed (any more), or a subscribe is on its way.
        if (state?.seq === undefined || state.awaiting) return;
        const { channel, data, seq, timestamp } = envelope;
        // A relay without epochs on messages has one numbering per subscription.
        const sameEpoch = envelope.epoch === undefined || envelope.epoch === state.epoch;
        if (sameEpoch && seq <= state.seq) return; // Delivered already.
        if (!sameEpoch || seq !== state.seq + 1) {
          const { replayUntil } = state;
          if (!sameEpoch || replayUntil === undefined || state.seq >= replayUntil) {
            // Missed something, or the numbering restarted: ask for what came after.
            return this.#sendSubscribe(channel);
          }
          // A gap inside a replay the relay promised: resync instead of asking forever.
          this.#options.onResync?.(channel);
        }
        state.seq = seq;
        if (state.replayUntil !== undefined && seq >= state.replayUntil) {
          state.replayUntil = undefined;
        }
        return this.#options.onMessage?.({ channel, data, seq, timestamp });
      }
      case "subscribed": {
        const state = this.#channels.get(envelope.channel);
        if (state === undefined) return;
        state.awaiting = false;
        const fresh = state.seq === undefined;
        if (fresh || envelope.recovered !== true) {
          // Start from now; after a gap that could not be filled, the gap is the application's.
          state.seq = envelope.seq;
          state.epoch = envelope.epoch;
          if (!fresh) this.#options.onResync?.(envelope.channel);
        } else if (envelope.seq > state.seq!) {
          state.replayUntil = envelope.seq;
        }
        return this.#options.onSubscribed?.(envelope.channel, envelope.recovered);
      }
      case "error":
        return this.#options.onError?.({
          code: envelope.code,
          message: envelope.message,
          id: envelope.id,
        });
    }
  }
}
