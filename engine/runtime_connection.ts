/**
 * The {@link Connection} contract over Deno's own WebSocket
 * (`Deno.upgradeWebSocket`), for a program that serves the relay from its
 * own `Deno.serve` (`createRelayHandler`). The runtime frames, pings and
 * closes; this adapter adds what it does not: the message size limit (after
 * the runtime has read the message, the best it allows) and the send budget
 * and its timeout (`bufferedAmount` is a call into the runtime, so it is
 * read only when an upper bound says the budget could be passed; with no
 * clock of its own, the timeout is checked on sends). It cannot release a
 * peer that never answers a close: the runtime offers no abort.
 *
 * @module
 */
import type {
  CloseCause,
  Connection,
  ConnectionHandler,
  ConnectionOptions,
  SendResult,
} from "./connection.ts";
import { EngineCloseCode, type Outbound, utf8Length } from "./frame.ts";

/** The text Deno puts on the error and close events when a ping went unanswered. */
const DENO_IDLE_TIMEOUT_REASON = "No response from ping frame.";

/** How often connections waiting to drain are polled. */
const DRAIN_POLL_MS = 5;

/** The limits a {@link RuntimeConnection} enforces; the runtime keeps the clocks. */
export type RuntimeOptions = Pick<
  ConnectionOptions,
  "maxMessageBytes" | "sendBufferBytes" | "sendBufferMaxBytes" | "sendTimeoutMs"
>;

/** A runtime WebSocket as a {@link Connection}; see the module doc. */
export class RuntimeConnection implements Connection {
  /** Connections whose whenDrained() answered false, until they drain or close. */
  static readonly #draining = new Set<RuntimeConnection>();
  static #drainTimer: ReturnType<typeof setInterval> | undefined;
  readonly #socket: WebSocket;
  readonly #options: RuntimeOptions;
  #handler: ConnectionHandler | undefined;
  #open = false;
  #cause: CloseCause | undefined;
  /** The first error the socket reported, for the disconnect's log line. */
  #error: string | undefined;
  #closeOnOpen: [code: number, reason: string] | undefined;
  /** Never less than the bytes the socket holds unsent. */
  #inFlightBound = 0;
  /** When the peer went over its budget (performance.now()), while it is. */
  #overBudgetSince: number | undefined;

  constructor(socket: WebSocket, options: RuntimeOptions) {
    this.#socket = socket;
    this.#options = options;
    // Binary frames arrive as the ArrayBuffer they came in, never as Blob.
    socket.binaryType = "arraybuffer";
  }

  start(handler: ConnectionHandler): void {
    this.#handler = handler;
    // The adapter itself is the listener (handleEvent): no closure per socket.
    for (const type of ["open", "message", "error", "close"]) {
      this.#socket.addEventListener(type, this);
    }
  }

  send(message: Outbound): SendResult {
    if (!this.#open) return "closed";
    const { sendBufferBytes, sendBufferMaxBytes, sendTimeoutMs } = this.#options;
    const bytes = message.bytes;
    let inFlight = this.#inFlightBound + bytes;
    if (inFlight > sendBufferBytes) {
      inFlight = this.#socket.bufferedAmount + bytes;
      if (inFlight > sendBufferMaxBytes) return "over_budget";
      if (inFlight <= sendBufferBytes) {
        this.#overBudgetSince = undefined;
      } else {
        const now = performance.now();
        this.#overBudgetSince ??= now;
        if (now - this.#overBudgetSince > sendTimeoutMs && sendTimeoutMs > 0) return "over_budget";
      }
    }
    this.#inFlightBound = inFlight;
    this.#socket.send(message.data);
    return "sent";
  }

  whenDrained(): boolean {
    if (!this.#open) return false;
    const buffered = this.#socket.bufferedAmount;
    // The exact figure is at hand: the send path's bound can start from it.
    this.#inFlightBound = buffered;
    if (buffered <= this.#options.sendBufferBytes / 2) return true;
    const waiting = RuntimeConnection.#draining;
    waiting.add(this);
    RuntimeConnection.#drainTimer ??= setInterval(RuntimeConnection.#pollDrains, DRAIN_POLL_MS);
    return false;
  }

  /** Tells each waiting connection whose socket has drained, and stops when none waits. */
  static #pollDrains(): void {
    const waiting = RuntimeConnection.#draining;
    for (const connection of waiting) {
      if (connection.#socket.bufferedAmount <= connection.#options.sendBufferBytes / 2) {
        connection.#stopWaiting();
        connection.#handler!.onDrain?.();
      }
    }
  }

  /** Leaves the connections waiting to drain; the timer stops with the last. */
  #stopWaiting(): void {
    const waiting = RuntimeConnection.#draining;
    if (!waiting.delete(this) || waiting.size > 0) return;
    clearInterval(RuntimeConnection.#drainTimer);
    RuntimeConnection.#drainTimer = undefined;
  }

  close(code: number, reason: string): void {
    this.#cause ??= "server";
    this.#open = false;
    this.#stopWaiting();
    const socket = this.#socket;
    if (socket.readyState === WebSocket.OPEN) socket.close(code, reason);
    // Before the handshake completes the close waits for it (see "open").
    else if (socket.readyState === WebSocket.CONNECTING) this.#closeOnOpen ??= [code, reason];
  }

  /** Routes the socket's events; public only because the DOM calls it. */
  handleEvent(event: Event): void {
    switch (event.type) {
      case "message":
        return this.#onMessage((event as MessageEvent).data);
      case "open":
        if (this.#closeOnOpen !== undefined) return this.#socket.close(...this.#closeOnOpen);
        this.#open = true;
        return this.#handler!.onOpen();
      case "error": {
        const { message } = event as ErrorEvent;
        // An unanswered ping comes as this error first, then a close with the same reason.
        if (message === DENO_IDLE_TIMEOUT_REASON) this.#cause ??= "idle_timeout";
        else {
          this.#cause ??= "error";
          this.#error ??= message || undefined;
        }
        return;
      }
      case "close": {
        this.#open = false;
        this.#stopWaiting();
        const { reason, code } = event as CloseEvent;
        this.#cause ??= reason === DENO_IDLE_TIMEOUT_REASON
          ? "idle_timeout"
          : code === 1006
          ? "error"
          : "client_close";
        this.#handler!.onClose(this.#cause, this.#error);
      }
    }
  }

  #onMessage(data: string | ArrayBuffer): void {
    if (!this.#open) return;
    const bytes = typeof data === "string" ? utf8Length(data) : data.byteLength;
    if (bytes > this.#options.maxMessageBytes) {
      this.#cause ??= "too_large";
      this.close(EngineCloseCode.MESSAGE_TOO_BIG, "message too big");
      return;
    }
    this.#handler!.onMessage(data, bytes);
  }
}
