/**
 * The engine: turns an upgraded socket (from `node:http`'s `upgrade` event)
 * into a {@link WebSocketConnection}, keeps every connection's clocks (idle
 * pings, send timeouts, close deadlines) with one timer for all of them
 * rather than timers per connection, and holds the bytes all its
 * connections buffer under one cap, evicting the furthest behind first.
 *
 * @example
 * ```ts
 * import { createServer } from "node:http";
 * import { WebSocketEngine } from "./engine.ts";
 * import { checkHandshake, httpAnswer } from "./handshake.ts";
 * const engine = new WebSocketEngine({
 *   maxMessageBytes: 1 << 20,
 *   idleTimeoutMs: 60_000,
 *   closeTimeoutMs: 5_000,
 *   sendBufferBytes: 4 << 20,
 *   sendBufferMaxBytes: 16 << 20,
 *   sendTimeoutMs: 10_000,
 *   maxBufferedBytes: 1 << 30,
 * });
 * const server = createServer().on("upgrade", (request, socket, head) => {
 *   const handshake = checkHandshake(request.method!, request.headers);
 *   if (!handshake.ok) return socket.end(httpAnswer(handshake));
 *   engine.accept(socket, head, handshake.key).start({
 *     onOpen() {},
 *     onMessage(data) {
 *       console.log(data);
 *     },
 *     onClose() {},
 *   });
 * });
 * server.close();
 * ```
 * @module
 */
import type { Duplex } from "node:stream";
import { type ConnectionOptions, type ConnectionPool, WebSocketConnection } from "./connection.ts";
import { switchingProtocols } from "./handshake.ts";

/** The longest and shortest gap between two clock ticks. */
const MAX_TICK_MS = 1000;
const MIN_TICK_MS = 10;
/** Evicting over the cap goes down to this share of it, so one eviction is not followed by another. */
const EVICT_TO = 0.9;

/** Options of a {@link WebSocketEngine}: every connection's, and the pool's cap. */
export interface EngineOptions extends ConnectionOptions {
  /** Bytes all connections may buffer together; over it the furthest behind go. 0: no cap. */
  maxBufferedBytes: number;
}

/** Accepts upgraded sockets and runs their clocks; see the module doc. */
export class WebSocketEngine implements ConnectionPool {
  bufferedBytes = 0;
  readonly maxBufferedBytes: number;
  readonly #options: ConnectionOptions;
  readonly #connections = new Set<WebSocketConnection>();
  readonly #tickMs: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastTick = 0;
  #evicting = false;

  constructor(options: EngineOptions) {
    const { maxBufferedBytes, ...connection } = options;
    this.#options = connection;
    this.maxBufferedBytes = maxBufferedBytes;
    // A quarter of the shortest interval keeps pings and deadlines within 25% of their time.
    const shortest = Math.min(
      options.closeTimeoutMs,
      options.sendTimeoutMs > 0 ? options.sendTimeoutMs : Infinity,
      options.idleTimeoutMs > 0 ? options.idleTimeoutMs / 2 : Infinity,
    );
    this.#tickMs = Math.max(MIN_TICK_MS, Math.min(MAX_TICK_MS, shortest / 4));
  }

  /** Connections open right now. */
  get size(): number {
    return this.#connections.size;
  }

  /** @internal {@link ConnectionPool}: a connection's socket has closed. */
  gone(connection: WebSocketConnection): void {
    this.#connections.delete(connection);
    if (this.#connections.size === 0) this.#stopClock();
  }

  /**
   * @internal {@link ConnectionPool}: the total passed the cap. The
   * eviction runs once, after the current task has queued all it will.
   */
  overCap(): void {
    if (this.#evicting) return;
    this.#evicting = true;
    queueMicrotask(() => this.#evictFurthestBehind());
  }

  /** Evicts connections, furthest behind first, until the total is back under the cap. */
  #evictFurthestBehind(): void {
    this.#evicting = false;
    const target = this.maxBufferedBytes * EVICT_TO;
    if (this.bufferedBytes <= this.maxBufferedBytes) return;
    const behind = [...this.#connections]
      .filter((connection) => connection.open && connection.bufferedAmount > 0)
      .sort((a, b) => b.bufferedAmount - a.bufferedAmount);
    for (const connection of behind) {
      if (this.bufferedBytes <= target) break;
      connection.evict(true);
    }
  }

  /**
   * Completes the handshake on `socket` (checked already, with
   * `checkHandshake`) and returns the connection; call its `start` to
   * receive its events. `protocol` is the subprotocol to answer with.
   */
  accept(socket: Duplex, head: Uint8Array, key: string, protocol?: string): WebSocketConnection {
    (socket as Duplex & { setNoDelay?(noDelay: boolean): void }).setNoDelay?.(true);
    const connection = new WebSocketConnection(
      socket,
      this.#options,
      switchingProtocols(key, protocol),
      head,
      this,
    );
    this.#connections.add(connection);
    this.#startClock();
    return connection;
  }

  #startClock(): void {
    if (this.#timer !== undefined) return;
    this.#lastTick = performance.now();
    this.#timer = setInterval(() => {
      // Measured, not assumed: a busy event loop makes ticks late.
      const now = performance.now();
      const elapsed = now - this.#lastTick;
      this.#lastTick = now;
      for (const connection of this.#connections) connection.tick(elapsed);
    }, this.#tickMs);
  }

  #stopClock(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
