/**
 * One client of the relay on top of its {@link Connection}: id, room or
 * channels, outbound byte budget, rate limit, token expiry, and the one way
 * it is closed by the server. In `json` mode it parses each message into a
 * command (see `protocol.ts`) and answers the malformed ones itself; in
 * `go-ws` mode it reads go-ws frames (see `gows.ts`) the same way. A
 * client never touches other clients; what it receives goes to its
 * {@link ClientHost} (the hub). Framing, size limits, pings and the close
 * handshake are the connection's (see `engine/`).
 *
 * @module
 */
import type { ChannelPatterns } from "./protocol.ts";
import type { CloseCause, Connection, SendResult } from "../engine/connection.ts";
import { Outbound, utf8Length } from "../engine/frame.ts";
import { readGoWsFrame } from "./gows.ts";
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
  /** The socket closed: remove the client, counted under `reason`; `error`: what the socket reported. */
  unregister(client: Client, reason: DisconnectReason, error?: string): void;
  /** A `raw` frame arrived from the client; `bytes` is its payload size. */
  receive(client: Client, data: string | ArrayBuffer, bytes: number): void;
  /** A `json` subscribe, unsubscribe or publish the client may make. */
  command(client: Client, command: Exclude<Command, { type: "ping" }>, bytes: number): void;
  /** A frame was refused with `code` (answered by the client in `json` mode). */
  refused(code: ProtocolErrorCode): void;
  /** The client's socket drained after {@link Client.whenDrained} said it had not. */
  drained(client: Client): void;
}

/** Options for a {@link Client}. */
export interface ClientOptions {
  /** The room the client joins; `""` is the one shared room. @default "" */
  room?: string;
  /** The peer's address, for logs. @default "" */
  remoteAddress?: string;
  /**
   * `raw` relays frames untouched; `json` speaks the channel protocol;
   * `go-ws` speaks go-ws's wire (`gows.ts`). @default "raw"
   */
  protocol?: "raw" | "json" | "go-ws";
  /** Frames per second the client may send, with bursts; `undefined`: no limit. */
  rateLimit?: { perSecond: number; burst: number };
  /** When the client's token expires (ms since the epoch); it is closed with 4001 then. */
  expiresAt?: number;
  /** The channels it may use (from its token); `undefined`: all. */
  channels?: ChannelPatterns;
  /** Called once the connection is gone, after the host heard of it. */
  onClosed?: (client: Client) => void;
}

/** Close codes the relay sends (RFC 6455 section 7.4.1 and the IANA registry). */
export const CloseCode = {
  /** Going Away: the server is shutting down. */
  GOING_AWAY: 1001,
  /** Policy Violation: over the rate limit in `raw` mode (and `go-ws`, which has no error for it). */
  POLICY_VIOLATION: 1008,
  /** Try Again Later: the client fell behind by more than its send budget. */
  TRY_AGAIN_LATER: 1013,
  /** The client's token expired while it was connected. */
  TOKEN_EXPIRED: 4001,
} as const;

/**
 * The closes the relay starts, each reason paired once with its close code
 * and the text the close frame carries (at most 123 bytes).
 */
export const SERVER_CLOSES = {
  slow_consumer: { code: CloseCode.TRY_AGAIN_LATER, text: "send buffer full" },
  shutdown: { code: CloseCode.GOING_AWAY, text: "server shutting down" },
  rate_limited: { code: CloseCode.POLICY_VIOLATION, text: "rate limit exceeded" },
  token_expired: { code: CloseCode.TOKEN_EXPIRED, text: "token expired" },
} as const satisfies { [R in DisconnectReason]?: { code: number; text: string } };

/** A reason the relay closes a client for; a key of {@link SERVER_CLOSES}. */
export type ServerClose = keyof typeof SERVER_CLOSES;

/** The longest delay a timer can take. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export type { SendResult };

let lastId = 0;

/** One client, wired to its host through its connection's events. */
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
  readonly #connection: Connection;
  readonly #host: ClientHost;
  readonly #allowed: ChannelPatterns | undefined;
  readonly #goWs: boolean;
  readonly #bucket: TokenBucket | undefined;
  #expiryTimer: ReturnType<typeof setTimeout> | undefined;
  #closeReason: DisconnectReason | undefined;
  /** Open and not yet closed by either side; tracked here to keep `send` cheap. */
  #open = false;
  readonly #onClosed: ((client: Client) => void) | undefined;

  /** @ignore Made by the edge for each accepted connection. */
  constructor(connection: Connection, host: ClientHost, options: ClientOptions = {}) {
    const {
      room = "",
      remoteAddress = "",
      protocol = "raw",
      rateLimit,
      expiresAt,
      channels,
      onClosed,
    } = options;
    this.room = room;
    this.json = protocol === "json";
    this.#goWs = protocol === "go-ws";
    this.#allowed = channels;
    this.#bucket = rateLimit && new TokenBucket(rateLimit.perSecond, rateLimit.burst);
    if (expiresAt !== undefined) this.#expireAt(expiresAt);
    this.remoteAddress = remoteAddress;
    this.#connection = connection;
    this.#host = host;
    this.#onClosed = onClosed;
    connection.start(this);
  }

  /**
   * Queues `message` unless the connection is over its hard limit (the
   * caller then closes it as a slow consumer): the check comes first, so a
   * client that stops reading cannot grow the server without bound.
   * @ignore The hub's, on its fan-out path.
   */
  send(message: Outbound): SendResult {
    if (!this.#open) return "closed";
    return this.#connection.send(message);
  }

  /**
   * Whether the socket holds little enough that more can be sent now (see
   * `Connection.whenDrained`); when not, the host hears `drained` once it
   * does. A replay sends only while this says yes, so it never fills the
   * budget by itself.
   */
  whenDrained(): boolean {
    return this.#open && this.#connection.whenDrained();
  }

  /**
   * Closes the connection on the server's initiative with the code and text
   * {@link SERVER_CLOSES} pairs with `reason`, remembering it so the close
   * is counted under that reason. Safe to call more than once: the first
   * reason wins. A slow consumer's unsent frames are dropped: it would
   * never read them.
   */
  close(reason: ServerClose): void {
    if (this.#closeReason !== undefined) return;
    this.#closeReason = reason;
    this.#open = false;
    const { code, text } = SERVER_CLOSES[reason];
    this.#connection.close(code, text, reason === "slow_consumer");
  }

  /**
   * @internal The connection opened: join the hub.
   * @ignore Called by the connection or the hub, not by the relay's users.
   */
  onOpen(): void {
    if (this.#closeReason !== undefined) return;
    this.#open = true;
    this.#host.register(this);
  }

  /**
   * @internal The socket drained: the host may send more.
   * @ignore Called by the connection or the hub, not by the relay's users.
   */
  onDrain(): void {
    if (this.#open) this.#host.drained(this);
  }

  /**
   * @internal The connection is gone.
   * @ignore Called by the connection or the hub, not by the relay's users.
   */
  onClose(cause: CloseCause, error?: string): void {
    this.#open = false;
    clearTimeout(this.#expiryTimer);
    const reason = this.#closeReason ?? (cause === "server" ? "error" : cause);
    this.#host.unregister(this, reason, error);
    this.#onClosed?.(this);
  }

  /**
   * Sends a reply of the channel protocol, under the same budget as any frame.
   * @ignore Called by the connection or the hub, not by the relay's users.
   */
  reply(reply: string | Outbound): void {
    const message = typeof reply === "string" ? new Outbound(reply, utf8Length(reply)) : reply;
    if (this.send(message) === "over_budget") {
      this.close("slow_consumer");
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
      this.close("token_expired");
    }, Math.min(Math.max(0, wait), MAX_TIMER_MS));
  }

  /**
   * @internal A message from the peer.
   * @ignore Called by the connection or the hub, not by the relay's users.
   */
  onMessage(data: string | ArrayBuffer, bytes: number): void {
    if (this.#bucket !== undefined && !this.#bucket.take()) {
      if (!this.json) {
        this.close("rate_limited");
        return;
      }
      return this.#refuse({ type: "error", code: "rate_limited", message: "rate limit exceeded" });
    }
    if (this.#goWs) {
      // go-ws answers pings and refusals itself and ignores what it does not know.
      const { command, reply, refused } = readGoWsFrame(data, this.#allowed);
      if (refused !== undefined) this.#host.refused(refused);
      if (reply !== undefined) this.reply(reply);
      if (command !== undefined) this.#host.command(this, command, bytes);
      return;
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
