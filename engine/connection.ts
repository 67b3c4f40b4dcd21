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
 * What a connection holds unsent is known exactly: its queue plus the write
 * in flight, counted here and in its pool's total.
 *
 * A sender that has much to send (a history replay) paces itself by the
 * socket: {@link Connection.whenDrained} says whether the bytes held are at
 * or below the low-water mark (half the send budget), and when they are not,
 * the handler's `onDrain` follows once a write completes that brings them
 * there. It costs a boolean per connection, no closure and no timer.
 *
 * Slow consumers are judged by time, as gorilla's write deadline and NATS's
 * `write_deadline` do: a peer may hold more than its budget for up to the
 * send timeout (a burst a healthy reader drains), never more than its hard
 * limit; past either it is closed with 1013. The pool (the engine) caps the
 * bytes all its connections hold together and evicts the furthest behind
 * first.
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
  /** The peer fell behind: over its budget too long, over its hard limit, or the pool's cap. */
  | "slow_consumer"
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
  /**
   * The connection is gone, whoever ended it. Called once. `error`: what
   * the socket reported when it failed (`ECONNRESET`, `EPIPE`, ...), if it did.
   */
  onClose(cause: CloseCause, error?: string): void;
  /**
   * The bytes held for the peer are at or below the low-water mark again,
   * after {@link Connection.whenDrained} answered `false`. Called once per
   * such answer, from a later task; never after `onClose`.
   */
  onDrain?(): void;
}

/** A WebSocket connection as the core sees it, whatever carries it. */
export interface Connection {
  /** Starts delivering events to `handler`. */
  start(handler: ConnectionHandler): void;
  /**
   * Queues `message` unless the bytes held for this peer would then pass its
   * hard limit; nothing is queued then (the caller closes it with 1013).
   */
  send(message: Outbound): SendResult;
  /**
   * Starts the close handshake with `code`; the connection is released when
   * the peer answers, or after the close timeout if it does not. With
   * `dropQueued`, frames not yet written are discarded first (a peer that is
   * not reading would never get them).
   */
  close(code: number, reason: string, dropQueued?: boolean): void;
  /**
   * Whether the bytes held for the peer are at or below the low-water mark
   * (half of its send budget) now, so more can be sent without nearing the
   * budget. When they are not, the handler's `onDrain` is called once they
   * are; a connection that is closing or closed answers `false` and calls
   * `onClose` instead. Cheap enough to ask before every message of a replay.
   */
  whenDrained(): boolean;
}

/** Limits and timing of a connection. */
export interface ConnectionOptions {
  /** Largest message accepted, in bytes; larger closes with 1009. */
  maxMessageBytes: number;
  /** A ping after half of this without inbound bytes, a close after the other half; 0: never. */
  idleTimeoutMs: number;
  /** How long a close may wait for the peer before the socket is reset. */
  closeTimeoutMs: number;
  /** Bytes a peer may fall behind by for up to {@link sendTimeoutMs}. */
  sendBufferBytes: number;
  /** Bytes a peer may never pass: over it, 1013 at once. */
  sendBufferMaxBytes: number;
  /** How long a peer may stay over {@link sendBufferBytes} before 1013; 0: no limit (only the hard one). */
  sendTimeoutMs: number;
}

/** What the connections of one engine share: their bytes in total, under a cap. */
export interface ConnectionPool {
  /** Bytes every connection of the pool holds, queued or in flight. */
  bufferedBytes: number;
  /** The cap on {@link bufferedBytes}; 0: none. */
  readonly maxBufferedBytes: number;
  /** {@link bufferedBytes} passed the cap: evict the furthest behind. */
  overCap(): void;
  /** A connection's socket has closed. */
  gone(connection: WebSocketConnection): void;
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
/** Try Again Later: sent to a slow consumer. */
const TRY_AGAIN_LATER = 1013;

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
  readonly #pool: ConnectionPool;
  #parser: FrameParser | undefined;
  #handler: ConnectionHandler | undefined;
  /** Bytes the peer sent right after its handshake, parsed once a handler is there. */
  #head: Uint8Array | undefined;
  /** The 101 answer until it is handed to the socket (always in the first write). */
  #greeting: Uint8Array | undefined;
  #state = State.Open;
  #cause: CloseCause | undefined;
  /** The first error the socket reported, for the disconnect's log line. */
  #error: string | undefined;
  #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  /** Bytes of the write in flight, 0 when none is. */
  #writingBytes = 0;
  #scheduled = false;
  /** Time without inbound bytes, advanced by {@link tick}. */
  #idleMs = 0;
  #readSinceTick = false;
  #pingSent = false;
  /** Time spent over the send budget, advanced by {@link tick}. */
  #overBudgetMs = 0;
  /** Time left before the socket is reset; counts down only while closing. */
  #closeDeadlineMs = 0;
  #onWritten: ((error?: Error | null) => void) | undefined;
  /** Our side is closing: write what is queued, then end the TCP connection; read nothing more. */
  #hungUp = false;
  /** {@link whenDrained} answered false: call the handler's onDrain once the bytes fall low enough. */
  #drainWanted = false;

  /**
   * Takes over `socket` with the 101 answer (`greeting`) as its first
   * write; `head` holds bytes the peer sent right after its handshake.
   * The pool hears when the socket is closed, before the handler does.
   */
  constructor(
    socket: Duplex,
    options: ConnectionOptions,
    greeting: Uint8Array,
    head: Uint8Array,
    pool: ConnectionPool,
  ) {
    const carrier = socket as CarrierSocket;
    carrier[CONNECTION] = this;
    this.#socket = carrier;
    this.#options = options;
    this.#pool = pool;
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

  static #onError(this: CarrierSocket, error: Error & { code?: string }): void {
    const connection = this[CONNECTION];
    connection.#cause ??= "error";
    connection.#error ??= error.code ?? error.message;
  }

  static #onSocketClose(this: CarrierSocket): void {
    this[CONNECTION].#gone();
  }

  /** Bytes held for the peer: queued here plus the write in flight. */
  get bufferedAmount(): number {
    return this.#queuedBytes + this.#writingBytes;
  }

  /** Whether the connection is open (not closing, not closed). */
  get open(): boolean {
    return this.#state === State.Open;
  }

  start(handler: ConnectionHandler): void {
    this.#handler = handler;
    handler.onOpen();
    const head = this.#head;
    this.#head = undefined;
    if (head !== undefined) this.#read(head);
  }

  send(message: Outbound): SendResult {
    if (this.#state !== State.Open) return "closed";
    const frame = message.frame;
    if (this.bufferedAmount + frame.length > this.#options.sendBufferMaxBytes) {
      return "over_budget";
    }
    this.#enqueue(frame);
    return "sent";
  }

  /** The bytes held are at or below the low-water mark, half the send budget. */
  get #belowLowWater(): boolean {
    return this.bufferedAmount <= this.#options.sendBufferBytes / 2;
  }

  whenDrained(): boolean {
    if (this.#state !== State.Open) return false;
    if (this.#belowLowWater) return true;
    this.#drainWanted = true;
    return false;
  }

  close(code: number, reason: string, dropQueued = false): void {
    if (this.#state !== State.Open) return;
    this.#cause = "server";
    if (dropQueued) this.#dropQueue();
    this.#sendClose(code, reason);
  }

  /**
   * Closes a peer that fell behind with 1013, dropping what it would never
   * read. `now` resets the connection at once instead, releasing every
   * byte it holds (the pool needs the memory now; a peer this far behind
   * would not read the close frame anyway).
   */
  evict(now = false): void {
    if (this.#state !== State.Open) return;
    this.#cause = "slow_consumer";
    if (!now) {
      this.#dropQueue();
      return this.#sendClose(TRY_AGAIN_LATER, "send buffer full");
    }
    this.#state = State.Closing;
    this.#queue = [];
    this.#release(this.#queuedBytes + this.#writingBytes);
    this.#queuedBytes = 0;
    this.#writingBytes = 0;
    this.#abort();
  }

  /**
   * Writes everything queued in one write, unless a write is in flight (its
   * completion writes what queued meanwhile). Called at the end of the task
   * that queued.
   */
  flush(): void {
    this.#scheduled = false;
    if (this.#writingBytes === 0 && this.#queue.length > 0 && this.#state !== State.Closed) {
      this.#writeQueue();
    }
  }

  /**
   * Advances the connection's clocks by `elapsedMs`: the close deadline while
   * closing; otherwise the send timeout and the idle ping and its timeout.
   */
  tick(elapsedMs: number): void {
    if (this.#state === State.Closed) return;
    if (this.#state === State.Closing) {
      this.#closeDeadlineMs -= elapsedMs;
      if (this.#closeDeadlineMs <= 0) this.#abort();
      return;
    }
    const { sendBufferBytes, sendTimeoutMs } = this.#options;
    if (this.bufferedAmount <= sendBufferBytes) {
      this.#overBudgetMs = 0;
    } else if ((this.#overBudgetMs += elapsedMs) > sendTimeoutMs && sendTimeoutMs > 0) {
      return this.evict();
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
    this.#release(this.#queuedBytes + this.#writingBytes);
    this.#queuedBytes = 0;
    this.#writingBytes = 0;
    this.#pool.gone(this);
    this.#handler?.onClose(this.#cause ?? "error", this.#error);
  }

  /** Discards frames not yet written; the 101 answer stays (without it the rest is garbage). */
  #dropQueue(): void {
    const greeting = this.#greeting;
    const kept = greeting?.length ?? 0;
    this.#release(this.#queuedBytes - kept);
    this.#queue = greeting === undefined ? [] : [greeting];
    this.#queuedBytes = kept;
  }

  #sendClose(code: number | undefined, reason: string): void {
    this.#state = State.Closing;
    this.#closeDeadlineMs = this.#options.closeTimeoutMs;
    this.#enqueue(encodeClose(code, reason));
  }

  /**
   * Closes our side of the TCP connection once what is queued is written:
   * the server closes first (RFC 6455 section 7.1.1). The close deadline
   * still resets the socket if the peer never reads what is left.
   */
  #hangUp(): void {
    this.#hungUp = true;
    // Our FIN after everything written; the socket closes when the peer's FIN arrives, or is
    // reset at the close deadline: destroying it now would reset a peer still sending and could
    // cost it our close frame.
    if (this.#writingBytes === 0 && this.#queue.length === 0) this.#socket.end();
  }

  #writeQueue(): void {
    const queue = this.#queue;
    const chunk = queue.length === 1 ? queue[0] : concat(queue, this.#queuedBytes);
    this.#greeting = undefined;
    this.#queue = [];
    this.#writingBytes = this.#queuedBytes;
    this.#queuedBytes = 0;
    this.#socket.write(chunk, this.#onWritten ??= (error) => this.#written(error));
  }

  /** The write in flight is done: the kernel has its bytes (or the socket failed). */
  #written(error: Error | null | undefined): void {
    this.#release(this.#writingBytes);
    this.#writingBytes = 0;
    if (error || this.#state === State.Closed) return;
    if (this.#queue.length > 0) this.#writeQueue();
    else if (this.#hungUp) this.#socket.end();
    // Only here can the bytes held fall: a completed write is the socket draining.
    if (this.#drainWanted && this.#state === State.Open && this.#belowLowWater) {
      this.#drainWanted = false;
      this.#handler!.onDrain?.();
    }
  }

  #enqueue(frame: Uint8Array): void {
    this.#queue.push(frame);
    this.#queuedBytes += frame.length;
    const pool = this.#pool;
    pool.bufferedBytes += frame.length;
    if (pool.maxBufferedBytes > 0 && pool.bufferedBytes > pool.maxBufferedBytes) pool.overCap();
    if (this.#scheduled) return;
    this.#scheduled = true;
    if (pending.push(this) === 1) queueMicrotask(flushPending);
  }

  #release(bytes: number): void {
    this.#pool.bufferedBytes -= bytes;
  }
}
