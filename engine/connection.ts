/**
 * One WebSocket connection over a TCP (or TLS) socket after the opening
 * handshake: inbound bytes through the {@link FrameParser}, outbound frames
 * through a write queue, the close handshake, pings, and the end of the TCP
 * connection. Also the {@link Connection} contract that the core's client
 * sees, which {@link RuntimeConnection} implements over Deno's own
 * WebSocket for embedding.
 *
 * The write path: frames are queued (shared bytes, never copied per
 * connection) and written at the end of the current task, all of them in
 * one write; while a write is in flight, what queues meanwhile waits and
 * goes out in the next one. The hub queues a whole batch before that task
 * ends, so a connection costs one write per batch, not one per message.
 * What a connection holds unsent is known exactly: its queue plus what the
 * socket has not yet handed to the kernel.
 *
 * Every close ends with the socket destroyed within the close timeout,
 * whether or not the peer answers: a slow or silent peer cannot keep its
 * TCP connection or its buffers.
 *
 * @module
 */
import type { Duplex } from "node:stream";
import { concat } from "./bytes.ts";
import { encodeClose, encodeFrame, EngineCloseCode, Opcode, type Outbound } from "./frame.ts";
import { FrameParser, type ParserSink } from "./parser.ts";

/** Why a connection ended, as far as the connection can tell. */
export type CloseCause =
  /** The peer sent a close frame. */
  | "client_close"
  /** The peer broke the protocol (1002) or sent invalid UTF-8 (1007). */
  | "protocol_error"
  /** The peer sent a message over the size limit (1009). */
  | "too_large"
  /** The peer did not answer a ping in time. */
  | "idle_timeout"
  /** The socket failed or the peer went away without a close frame. */
  | "error"
  /** The server closed it ({@link Connection.close}); the caller knows why. */
  | "server";

/** The outcome of {@link Connection.send}. */
export type SendResult = "sent" | "closed" | "over_budget";

/** What a connection reports to; the core's client implements it. */
export interface ConnectionHandler {
  /** The connection is open: messages can be sent. */
  onOpen(): void;
  /** A complete message from the peer: text as a string, binary as an `ArrayBuffer`. */
  onMessage(data: string | ArrayBuffer, bytes: number): void;
  /** The connection is gone, whoever ended it. Called once. */
  onClose(cause: CloseCause): void;
}

/** A WebSocket connection as the core sees it, whatever carries it. */
export interface Connection {
  /** Starts delivering events to `handler`. */
  start(handler: ConnectionHandler): void;
  /**
   * Queues `message` unless the bytes held for this peer would then pass
   * `budget`; nothing is queued then.
   */
  send(message: Outbound, budget: number): SendResult;
  /**
   * Starts the close handshake with `code`; the connection is released when
   * the peer answers, or after the close timeout if it does not. With
   * `dropQueued`, frames not yet written are discarded first (a peer that is
   * not reading would never get them).
   */
  close(code: number, reason: string, dropQueued?: boolean): void;
}

/** Timing of a {@link WebSocketConnection}. */
export interface ConnectionOptions {
  /** Largest message accepted, in bytes; larger closes with 1009. */
  maxMessageBytes: number;
  /** A ping after half of this without inbound bytes, a destroy after the other half; 0: never. */
  idleTimeoutMs: number;
  /** How long a close may wait for the peer before the socket is destroyed. */
  closeTimeoutMs: number;
}

const enum State {
  Open,
  /** A close frame has been queued; only the peer's close (or the deadline) remains. */
  Closing,
  Closed,
}

const PING = encodeFrame(Opcode.PING, new Uint8Array(0));
/** Going Away: sent to a peer that stopped answering pings. */
const GOING_AWAY = 1001;

/** Connections with frames queued in the current task. */
let pending: WebSocketConnection[] = [];

function flushPending(): void {
  const flushing = pending;
  pending = [];
  for (const connection of flushing) connection.flush();
}

/** The connection a socket carries, for the listeners shared by every socket. */
const CONNECTION = Symbol("connection");
type CarrierSocket = Duplex & { [CONNECTION]: WebSocketConnection };

/**
 * A connection the engine accepted; see the module doc. Idle connections
 * are the many, so one costs little: the socket's listeners are shared
 * functions, the parser is made on the first inbound bytes, and the
 * connection is the parser's sink itself.
 */
export class WebSocketConnection implements Connection, ParserSink {
  readonly #socket: CarrierSocket;
  readonly #options: ConnectionOptions;
  readonly #onGone: (connection: WebSocketConnection) => void;
  #parser: FrameParser | undefined;
  #handler: ConnectionHandler | undefined;
  /** Bytes the peer sent right after its handshake, parsed once a handler is there. */
  #head: Uint8Array | undefined;
  /** The 101 answer until it is handed to the socket (always in the first write). */
  #greeting: Uint8Array | undefined;
  #state = State.Open;
  #cause: CloseCause | undefined;
  #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  #writing = false;
  #scheduled = false;
  /** Time without inbound bytes, advanced by {@link tick}. */
  #idleMs = 0;
  #readSinceTick = false;
  #pingSent = false;
  /** Time left before the socket is destroyed; counts down only while closing. */
  #closeDeadlineMs = 0;
  #onWritten: ((error?: Error | null) => void) | undefined;
  /** Our side of the TCP connection is closed: inbound bytes are ignored. */
  #hungUp = false;

  /**
   * Takes over `socket` with the 101 answer (`greeting`) as its first
   * write; `head` holds bytes the peer sent right after its handshake.
   * `onGone` hears when the socket is closed, before the handler does.
   */
  constructor(
    socket: Duplex,
    options: ConnectionOptions,
    greeting: Uint8Array,
    head: Uint8Array,
    onGone: (connection: WebSocketConnection) => void,
  ) {
    const carrier = socket as CarrierSocket;
    carrier[CONNECTION] = this;
    this.#socket = carrier;
    this.#options = options;
    this.#onGone = onGone;
    this.#head = head.length > 0 ? head : undefined;
    this.#greeting = greeting;
    this.#enqueue(greeting);
    socket.on("data", WebSocketConnection.#onData);
    socket.on("end", WebSocketConnection.#onEnd);
    socket.on("error", WebSocketConnection.#onError);
    socket.on("close", WebSocketConnection.#onSocketClose);
  }

  static #onData(this: CarrierSocket, chunk: Uint8Array): void {
    this[CONNECTION].#read(chunk);
  }

  static #onEnd(this: CarrierSocket): void {
    // Without a close frame first, the peer went away (1006 in RFC terms).
    this[CONNECTION].#cause ??= "error";
    this.destroy();
  }

  static #onError(this: CarrierSocket): void {
    this[CONNECTION].#cause ??= "error";
  }

  static #onSocketClose(this: CarrierSocket): void {
    this[CONNECTION].#gone();
  }

  /** Bytes held for the peer: queued here plus not yet taken by the kernel. */
  get bufferedAmount(): number {
    return this.#queuedBytes + this.#socket.writableLength;
  }

  start(handler: ConnectionHandler): void {
    this.#handler = handler;
    handler.onOpen();
    const head = this.#head;
    this.#head = undefined;
    if (head !== undefined) this.#read(head);
  }

  send(message: Outbound, budget: number): SendResult {
    if (this.#state !== State.Open) return "closed";
    const frame = message.frame;
    if (this.#queuedBytes + this.#socket.writableLength + frame.length > budget) {
      return "over_budget";
    }
    this.#enqueue(frame);
    return "sent";
  }

  close(code: number, reason: string, dropQueued = false): void {
    if (this.#state !== State.Open) return;
    this.#cause = "server";
    if (dropQueued) {
      // The 101 answer is not a frame: without it the close frame would be garbage.
      const greeting = this.#greeting;
      this.#queue = greeting === undefined ? [] : [greeting];
      this.#queuedBytes = greeting?.length ?? 0;
    }
    this.#sendClose(code, reason);
  }

  /**
   * Writes everything queued in one write, unless a write is in flight (its
   * completion writes what queued meanwhile). Called at the end of the task
   * that queued.
   */
  flush(): void {
    this.#scheduled = false;
    if (!this.#writing && this.#queue.length > 0 && this.#state !== State.Closed) {
      this.#writeQueue();
    }
  }

  /**
   * Advances the connection's clocks by `elapsedMs`: the close deadline while
   * closing, otherwise the idle ping and its timeout.
   */
  tick(elapsedMs: number): void {
    if (this.#state === State.Closed) return;
    if (this.#state === State.Closing) {
      this.#closeDeadlineMs -= elapsedMs;
      if (this.#closeDeadlineMs <= 0) this.#abort();
      return;
    }
    const idleTimeoutMs = this.#options.idleTimeoutMs;
    if (idleTimeoutMs === 0) return;
    if (this.#readSinceTick) {
      this.#readSinceTick = false;
      this.#idleMs = 0;
      this.#pingSent = false;
      return;
    }
    this.#idleMs += elapsedMs;
    if (this.#idleMs < idleTimeoutMs / 2) return;
    if (this.#pingSent) {
      // A peer that is alive but not answering is told why; a dead one is
      // dropped by the close deadline.
      this.#cause = "idle_timeout";
      this.#sendClose(GOING_AWAY, "ping not answered");
      this.#hangUp();
      return;
    }
    this.#pingSent = true;
    this.#idleMs = 0;
    this.#enqueue(PING);
  }

  /** @internal {@link ParserSink}: a complete message. */
  onMessage(data: string | ArrayBuffer, bytes: number): void {
    // After our close frame the peer's data has no one to go to.
    if (this.#state === State.Open) this.#handler!.onMessage(data, bytes);
  }

  /** @internal {@link ParserSink}: a ping, answered with the same payload. */
  onPing(payload: Uint8Array): void {
    if (this.#state === State.Open) this.#enqueue(encodeFrame(Opcode.PONG, payload));
  }

  /** @internal {@link ParserSink}: any inbound bytes count as life (see tick). */
  onPong(): void {}

  /** @internal {@link ParserSink}: the peer's close; answer it (unless it answers ours), hang up. */
  onCloseFrame(code: number | undefined): void {
    if (this.#state === State.Open) {
      this.#cause = "client_close";
      this.#sendClose(code, "");
    }
    this.#hangUp();
  }

  /** @internal {@link ParserSink}: a violation; close with `code`, hang up without waiting. */
  onViolation(code: number, reason: string): void {
    if (this.#state === State.Open) {
      this.#cause = code === EngineCloseCode.MESSAGE_TOO_BIG ? "too_large" : "protocol_error";
      this.#sendClose(code, reason);
    }
    this.#hangUp();
  }

  #read(chunk: Uint8Array): void {
    this.#readSinceTick = true;
    if (this.#handler === undefined) {
      // Before start() the bytes wait with the head.
      const head = this.#head;
      this.#head = head === undefined ? chunk : concat([head, chunk], head.length + chunk.length);
      return;
    }
    // After we hung up, or once the socket is gone, nothing more is read.
    if (this.#hungUp || this.#state === State.Closed) return;
    (this.#parser ??= new FrameParser(this, this.#options.maxMessageBytes)).push(chunk);
  }

  /**
   * Drops the TCP connection with a reset: a plain close would leave what
   * the kernel still holds for a peer that is not reading (megabytes)
   * lingering in FIN_WAIT1 for minutes.
   */
  #abort(): void {
    const socket = this.#socket as Duplex & { resetAndDestroy?(): void };
    if (socket.resetAndDestroy !== undefined) socket.resetAndDestroy();
    else socket.destroy();
  }

  #gone(): void {
    this.#state = State.Closed;
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#onGone(this);
    this.#handler?.onClose(this.#cause ?? "error");
  }

  #sendClose(code: number | undefined, reason: string): void {
    this.#state = State.Closing;
    this.#closeDeadlineMs = this.#options.closeTimeoutMs;
    this.#enqueue(encodeClose(code, reason));
  }

  /**
   * Writes what is queued and closes our side of the TCP connection: the
   * server closes first (RFC 6455 section 7.1.1). The close deadline still
   * destroys the socket if the peer never reads what is left.
   */
  #hangUp(): void {
    this.#hungUp = true;
    if (this.#queue.length > 0) this.#writeQueue();
    this.#socket.end();
  }

  #writeQueue(): void {
    const queue = this.#queue;
    const chunk = queue.length === 1 ? queue[0] : concat(queue, this.#queuedBytes);
    this.#greeting = undefined;
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#writing = true;
    this.#socket.write(
      chunk,
      this.#onWritten ??= (error) => {
        this.#writing = false;
        if (!error && this.#queue.length > 0) this.flush();
      },
    );
  }

  #enqueue(frame: Uint8Array): void {
    this.#queue.push(frame);
    this.#queuedBytes += frame.length;
    if (this.#scheduled) return;
    this.#scheduled = true;
    if (pending.push(this) === 1) queueMicrotask(flushPending);
  }
}
