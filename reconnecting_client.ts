/**
 * A client for the relay's channel protocol (`websocket.protocol: json`)
 * that stays connected: it reconnects with exponential backoff and jitter,
 * resubscribes its channels with `since` set to the last `seq` it saw, and
 * drops duplicates, so an application sees every message exactly once
 * across a dropped connection or a relay restart within the history window.
 * When the relay cannot replay everything, `onResync` says so instead of
 * messages going missing silently.
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
  channel: string;
  data: unknown;
  seq: number;
  /** When the relay accepted it, ms since the epoch. */
  timestamp: number;
}

/** An `error` envelope from the relay. */
export interface RelayError {
  code: string;
  message: string;
  id?: string | number;
}

/** Timers and randomness, injectable so tests need not sleep. */
export interface Clock {
  setTimeout(callback: () => void, ms: number): unknown;
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
  /** Each time a connection opens. */
  onConnect?(): void;
  /** Each time a connection is lost (or closed by {@link ReconnectingClient.close}). */
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
  /** @default the global timers and Math.random */
  clock?: Clock;
}

/**
 * Where a channel's stream stands: the last `seq` handed to the application
 * (or, before any message, the `seq` the relay reported on subscribing) and
 * the `epoch` it belongs to. A resubscribe asks for exactly what came after.
 */
export interface Position {
  seq: number;
  epoch: string;
}

/** A {@link Position}, or nothing before the first `subscribed` without a starting one. */
type PartialPosition = Partial<Position>;

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
  readonly url: string;
  readonly #options: ReconnectingClientOptions;
  readonly #protocols: string[];
  readonly #clock: Clock;
  readonly #channels = new Map<string, PartialPosition>();
  #socket: WebSocket | undefined;
  #state: ConnectionState = "disconnected";
  /** Failed attempts since the last open; 0 while connected. */
  #attempt = 0;
  #everConnected = false;
  #droppedSinceOpen = false;
  #timer: unknown;
  #closed = false;

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
    this.#channels.set(channel, from === undefined ? {} : { seq: from.seq, epoch: from.epoch });
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
  }

  #onOpen(): void {
    this.#state = "connected";
    const attempt = this.#attempt;
    this.#attempt = 0;
    for (const channel of this.#channels.keys()) this.#sendSubscribe(channel);
    this.#options.onConnect?.();
    if (this.#everConnected && this.#droppedSinceOpen) this.#options.onReconnect?.(attempt);
    this.#everConnected = true;
    this.#droppedSinceOpen = false;
  }

  #onClose(code: number, reason: string): void {
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
    const { seq, epoch } = this.#channels.get(channel)!;
    this.send(JSON.stringify({ type: "subscribe", channel, since: seq, epoch }));
  }

  #onMessage(data: unknown): void {
    if (typeof data !== "string") return;
    const envelope = JSON.parse(data);
    switch (envelope.type) {
      case "message": {
        const position = this.#channels.get(envelope.channel);
        // Not subscribed (any more), or already seen before a reconnect.
        if (position?.seq === undefined || envelope.seq <= position.seq) return;
        position.seq = envelope.seq;
        const { channel, data, seq, timestamp } = envelope;
        return this.#options.onMessage?.({ channel, data, seq, timestamp });
      }
      case "subscribed": {
        const position = this.#channels.get(envelope.channel);
        if (position === undefined) return;
        const fresh = position.seq === undefined;
        if (fresh || envelope.recovered === false) {
          // Start from now; with `recovered: false` the gap is the application's to fill.
          position.seq = envelope.seq;
          if (!fresh) this.#options.onResync?.(envelope.channel);
        }
        position.epoch = envelope.epoch;
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
