/**
 * One WebSocket connection: its socket, id, room or channels, outbound byte
 * budget, rate limit, token expiry, and the one way it is closed by the
 * server. In `json` mode it parses each frame into a command (see
 * `protocol.ts`) and answers the malformed ones itself. A client never
 * touches other clients; what it receives goes to its {@link ClientHost}
 * (the hub).
 *
 * @module
 */
import type { ChannelPatterns } from "./auth.ts";
import {
  type Command,
  encodeError,
  encodePong,
  parseCommand,
  type ProtocolError,
  type ProtocolErrorCode,
} from "./protocol.ts";
import type { DisconnectReason } from "./stats.ts";

/** What a client reports to; the hub implements it. */
export interface ClientHost {
  /** The socket opened: add the client (to its room, in `raw` mode). */
  register(client: Client): void;
  /** The socket closed: remove the client, counted under `reason`. */
  unregister(client: Client, reason: DisconnectReason): void;
  /** A `raw` frame arrived from the client; `bytes` is its payload size. */
  receive(client: Client, data: string | ArrayBuffer, bytes: number): void;
  /** A `json` subscribe, unsubscribe or publish the client may make. */
  command(client: Client, command: Exclude<Command, { type: "ping" }>, bytes: number): void;
  /** A frame was refused with `code` (answered by the client in `json` mode). */
  refused(code: ProtocolErrorCode): void;
}

/** Options for a {@link Client}. */
export interface ClientOptions {
  /** The room the client joins; `""` is the one shared room. @default "" */
  room?: string;
  /** The peer's address, for logs. @default "" */
  remoteAddress?: string;
  /**
   * Unsent bytes the socket may hold before the client counts as a slow
   * consumer and is closed with 1013.
   * @default 4194304
   */
  sendBufferBytes?: number;
  /** Largest frame accepted from the client; larger closes with 1009. @default 1048576 */
  maxMessageBytes?: number;
  /** `raw` relays frames untouched; `json` speaks the channel protocol. @default "raw" */
  protocol?: "raw" | "json";
  /** Frames per second the client may send, with bursts; `undefined`: no limit. */
  rateLimit?: { perSecond: number; burst: number };
  /** When the client's token expires (ms since the epoch); it is closed with 4001 then. */
  expiresAt?: number;
  /** The channels it may use (from its token); `undefined`: all. */
  channels?: ChannelPatterns;
}

/** Close codes the relay sends (RFC 6455 section 7.4.1 and the IANA registry). */
export const CloseCode = {
  /** Going Away: the server is shutting down. */
  GOING_AWAY: 1001,
  /** Message Too Big: a frame exceeded `max_message_bytes`. */
  MESSAGE_TOO_BIG: 1009,
  /** Policy Violation: over the rate limit in `raw` mode. */
  POLICY_VIOLATION: 1008,
  /** Try Again Later: the client fell behind by more than its send budget. */
  TRY_AGAIN_LATER: 1013,
  /** The client's token expired while it was connected. */
  TOKEN_EXPIRED: 4001,
} as const;

/** The reason text Deno puts on the close event when a ping went unanswered. */
const DENO_IDLE_TIMEOUT_REASON = "No response from ping frame.";

/** The longest delay a timer can take. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The outcome of {@link Client.send}. */
export type SendResult = "sent" | "closed" | "over_budget";

let lastId = 0;

/** One connection, wired to its host through the socket's events. */
export class Client {
  /** Unique within this process. */
  readonly id: string = (++lastId).toString(36);
  /** The room this client belongs to in `raw` mode. */
  readonly room: string;
  /** The channels the client is in; only the hub changes this. */
  readonly channels: Set<string> = new Set();
  /** Whether the client speaks the `json` channel protocol. */
  readonly json: boolean;
  /** The peer's address. */
  readonly remoteAddress: string;
  /** When the upgrade was accepted, in ms since the epoch. */
  readonly connectedAt: number = Date.now();
  /** Resolves once the socket is closed, whoever closed it. */
  readonly closed: Promise<void>;
  readonly #socket: WebSocket;
  readonly #host: ClientHost;
  readonly #sendBufferBytes: number;
  readonly #maxMessageBytes: number;
  readonly #allowed: ChannelPatterns | undefined;
  readonly #bucket: TokenBucket | undefined;
  #expiryTimer: ReturnType<typeof setTimeout> | undefined;
  #closeReason: DisconnectReason | undefined;
  #closeOnOpen: [code: number, text: string] | undefined;
  #failed = false;
  /** Open and not yet closed by either side; tracked here to keep `send` cheap. */
  #open = false;
  /** Never less than the bytes the socket holds unsent. */
  #inFlightBound = 0;
  #resolveClosed!: () => void;

  constructor(socket: WebSocket, host: ClientHost, options: ClientOptions = {}) {
    const {
      room = "",
      remoteAddress = "",
      sendBufferBytes = 4_194_304,
      maxMessageBytes = 1_048_576,
      protocol = "raw",
      rateLimit,
      expiresAt,
      channels,
    } = options;
    this.room = room;
    this.json = protocol === "json";
    this.#allowed = channels;
    this.#bucket = rateLimit && new TokenBucket(rateLimit.perSecond, rateLimit.burst);
    if (expiresAt !== undefined) this.#expireAt(expiresAt);
    this.remoteAddress = remoteAddress;
    this.#socket = socket;
    this.#host = host;
    this.#sendBufferBytes = sendBufferBytes;
    this.#maxMessageBytes = maxMessageBytes;
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
    // Binary frames relay as the ArrayBuffer they arrived in, never as Blob.
    socket.binaryType = "arraybuffer";
    // The client itself is the listener (handleEvent): no closure per socket.
    socket.addEventListener("open", this);
    socket.addEventListener("message", this);
    socket.addEventListener("error", this);
    socket.addEventListener("close", this);
  }

  /**
   * Hands `data` to the socket unless that would put more than the send
   * budget in flight. The check comes first because Deno buffers unsent
   * data without limit: a client that stops reading would otherwise grow
   * the server without bound.
   *
   * Reading `bufferedAmount` is a call into the runtime, so it is made only
   * when an upper bound (the last reading plus everything sent since) says
   * the budget could be passed: for a client that keeps up, about once per
   * budget's worth of bytes rather than on every delivery. The bound never
   * underestimates, so the budget is never exceeded.
   */
  send(data: string | ArrayBuffer, bytes: number): SendResult {
    if (!this.#open) return "closed";
    let inFlight = this.#inFlightBound + bytes;
    if (inFlight > this.#sendBufferBytes) {
      inFlight = this.#socket.bufferedAmount + bytes;
      if (inFlight > this.#sendBufferBytes) return "over_budget";
    }
    this.#inFlightBound = inFlight;
    this.#socket.send(data);
    return "sent";
  }

  /**
   * Closes the connection on the server's initiative, remembering why so the
   * close is counted under that reason. Safe to call more than once: the
   * first reason wins.
   */
  close(code: number, reason: DisconnectReason, text = ""): void {
    if (this.#closeReason !== undefined) return;
    this.#closeReason = reason;
    this.#open = false;
    const socket = this.#socket;
    if (socket.readyState === WebSocket.OPEN) socket.close(code, text);
    // Before the handshake completes the close waits for it (see "open").
    else if (socket.readyState === WebSocket.CONNECTING) this.#closeOnOpen = [code, text];
  }

  /** Routes the socket's events; public only because the DOM calls it. */
  handleEvent(event: Event): void {
    switch (event.type) {
      case "message":
        return this.#onMessage((event as MessageEvent).data);
      case "open":
        if (this.#closeOnOpen !== undefined) return this.#socket.close(...this.#closeOnOpen);
        this.#open = true;
        return this.#host.register(this);
      case "error":
        this.#failed = true;
        return;
      case "close":
        this.#open = false;
        clearTimeout(this.#expiryTimer);
        this.#host.unregister(this, this.#reasonFor(event as CloseEvent));
        this.#resolveClosed();
    }
  }

  /** Sends a reply of the channel protocol, under the same budget as any frame. */
  reply(text: string): void {
    if (this.send(text, utf8Length(text)) === "over_budget") {
      this.close(CloseCode.TRY_AGAIN_LATER, "slow_consumer", "send buffer full");
    }
  }

  /**
   * Closes the client with 4001 at `expiresAt`. Timers cannot wait longer
   * than 2^31-1 ms (about 24.8 days; longer fires at once), so a far expiry
   * is reached in steps.
   */
  #expireAt(expiresAt: number): void {
    const wait = expiresAt - Date.now();
    this.#expiryTimer = setTimeout(() => {
      if (wait > MAX_TIMER_MS) return this.#expireAt(expiresAt);
      this.close(CloseCode.TOKEN_EXPIRED, "token_expired", "token expired");
    }, Math.min(Math.max(0, wait), MAX_TIMER_MS));
  }

  #onMessage(data: string | ArrayBuffer): void {
    const bytes = typeof data === "string" ? utf8Length(data) : data.byteLength;
    if (bytes > this.#maxMessageBytes) {
      this.close(CloseCode.MESSAGE_TOO_BIG, "too_large", "message too big");
      return;
    }
    if (this.#bucket !== undefined && !this.#bucket.take()) {
      if (!this.json) {
        this.close(CloseCode.POLICY_VIOLATION, "rate_limited", "rate limit exceeded");
        return;
      }
      return this.#refuse({ type: "error", code: "rate_limited", message: "rate limit exceeded" });
    }
    if (!this.json) return this.#host.receive(this, data, bytes);
    if (typeof data !== "string") {
      return this.#refuse({
        type: "error",
        code: "binary_unsupported",
        message: "binary frames are not part of the json protocol; send JSON text",
      });
    }
    const command = parseCommand(data);
    if (command.type === "error") return this.#refuse(command);
    if (command.type === "ping") return this.reply(encodePong(command.id));
    if (command.type !== "unsubscribe" && !(this.#allowed?.allows(command.channel) ?? true)) {
      return this.#refuse({
        type: "error",
        code: "forbidden",
        message: `your token does not allow channel ${command.channel}`,
        id: command.id,
      });
    }
    this.#host.command(this, command, bytes);
  }

  #refuse(error: ProtocolError): void {
    this.#host.refused(error.code);
    if (this.json) this.reply(encodeError(error));
  }

  #reasonFor(event: CloseEvent): DisconnectReason {
    if (this.#closeReason !== undefined) return this.#closeReason;
    if (event.reason === DENO_IDLE_TIMEOUT_REASON) return "idle_timeout";
    return this.#failed ? "error" : "client_close";
  }
}

/**
 * A token bucket: `burst` frames at once, refilled at `perSecond`. Refilled
 * lazily on each take, so an idle client costs nothing.
 */
class TokenBucket {
  readonly #perMs: number;
  readonly #burst: number;
  #tokens: number;
  #last = performance.now();

  constructor(perSecond: number, burst: number) {
    this.#perMs = perSecond / 1000;
    this.#burst = burst;
    this.#tokens = burst;
  }

  /** Takes a token if there is one. */
  take(): boolean {
    const now = performance.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#last) * this.#perMs);
    this.#last = now;
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }
}

/** UTF-8 length of a string without encoding it. */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) continue;
    if (code < 0x800) {
      bytes += 1;
    } else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      // A surrogate pair is 2 UTF-16 units and 4 UTF-8 bytes.
      bytes += 2;
      i++;
    } else {
      bytes += 2;
    }
  }
  return bytes;
}
