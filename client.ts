/**
 * One WebSocket connection: its socket, id, room, outbound byte budget, and
 * the one way it is closed by the server. A client never touches other
 * clients; what it receives goes to its {@link ClientHost} (the hub).
 *
 * @module
 */
import type { DisconnectReason } from "./stats.ts";

/** What a client reports to; the hub implements it. */
export interface ClientHost {
  /** The socket opened: add the client to its room. */
  register(client: Client): void;
  /** The socket closed: remove the client, counted under `reason`. */
  unregister(client: Client, reason: DisconnectReason): void;
  /** A frame arrived from the client; `bytes` is its payload size. */
  receive(client: Client, data: string | ArrayBuffer, bytes: number): void;
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
}

/** Close codes the relay sends (RFC 6455 section 7.4.1 and the IANA registry). */
export const CloseCode = {
  /** Going Away: the server is shutting down. */
  GOING_AWAY: 1001,
  /** Message Too Big: a frame exceeded `max_message_bytes`. */
  MESSAGE_TOO_BIG: 1009,
  /** Try Again Later: the client fell behind by more than its send budget. */
  TRY_AGAIN_LATER: 1013,
} as const;

/** The reason text Deno puts on the close event when a ping went unanswered. */
const DENO_IDLE_TIMEOUT_REASON = "No response from ping frame.";

/** The outcome of {@link Client.send}. */
export type SendResult = "sent" | "closed" | "over_budget";

let lastId = 0;

/** One connection, wired to its host through the socket's events. */
export class Client {
  /** Unique within this process. */
  readonly id: string = (++lastId).toString(36);
  /** The room this client belongs to. */
  readonly room: string;
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
  #closeReason: DisconnectReason | undefined;
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
    } = options;
    this.room = room;
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
    if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) {
      socket.close(code, text);
    }
  }

  /** Routes the socket's events; public only because the DOM calls it. */
  handleEvent(event: Event): void {
    switch (event.type) {
      case "message":
        return this.#onMessage((event as MessageEvent).data);
      case "open":
        this.#open = true;
        return this.#host.register(this);
      case "error":
        this.#failed = true;
        return;
      case "close":
        this.#open = false;
        this.#host.unregister(this, this.#reasonFor(event as CloseEvent));
        this.#resolveClosed();
    }
  }

  #onMessage(data: string | ArrayBuffer): void {
    const bytes = typeof data === "string" ? utf8Length(data) : data.byteLength;
    if (bytes > this.#maxMessageBytes) {
      this.close(CloseCode.MESSAGE_TOO_BIG, "too_large", "message too big");
      return;
    }
    this.#host.receive(this, data, bytes);
  }

  #reasonFor(event: CloseEvent): DisconnectReason {
    if (this.#closeReason !== undefined) return this.#closeReason;
    if (event.reason === DENO_IDLE_TIMEOUT_REASON) return "idle_timeout";
    return this.#failed ? "error" : "client_close";
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
