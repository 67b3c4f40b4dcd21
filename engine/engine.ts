/**
 * The engine: turns an upgraded socket (from `node:http`'s `upgrade` event)
 * into a {@link WebSocketConnection}, and keeps every connection's clocks
 * (idle pings, close deadlines) with one timer for all of them rather than
 * timers per connection.
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
import { type ConnectionOptions, WebSocketConnection } from "./connection.ts";
import { switchingProtocols } from "./handshake.ts";

/** The longest and shortest gap between two clock ticks. */
const MAX_TICK_MS = 1000;
const MIN_TICK_MS = 10;

/** Accepts upgraded sockets and runs their clocks; see the module doc. */
export class WebSocketEngine {
  readonly #options: ConnectionOptions;
  readonly #connections = new Set<WebSocketConnection>();
  readonly #tickMs: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastTick = 0;
  readonly #onGone = (connection: WebSocketConnection) => {
    this.#connections.delete(connection);
    if (this.#connections.size === 0) this.#stopClock();
  };

  constructor(options: ConnectionOptions) {
    this.#options = options;
    // A quarter of the shortest interval keeps pings and deadlines within 25% of their time.
    const shortest = Math.min(
      options.closeTimeoutMs,
      options.idleTimeoutMs > 0 ? options.idleTimeoutMs / 2 : Infinity,
    );
    this.#tickMs = Math.max(MIN_TICK_MS, Math.min(MAX_TICK_MS, shortest / 4));
  }

  /** Connections open right now. */
  get size(): number {
    return this.#connections.size;
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
      this.#onGone,
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
