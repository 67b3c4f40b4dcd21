/**
 * Unit tests of {@link WebSocketConnection} over a fake `Duplex` that
 * records each write and can hold a write in flight: one write per task
 * however many frames, coalescing behind a write in flight, the send
 * budget, the close handshake from either side and its deadline,
 * violations, idle pings and their timeout, `dropQueued`, and `onClose`
 * called once with the cause of each way a connection ends. Clocks advance
 * only through `tick`, so nothing here depends on timing.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Duplex } from "node:stream";
import {
  type CloseCause,
  type ConnectionHandler,
  type ConnectionOptions,
  type ConnectionPool,
  WebSocketConnection,
} from "../../engine/connection.ts";
import { Opcode, Outbound } from "../../engine/frame.ts";
import {
  clientFrame,
  closeOf,
  closePayload,
  concat,
  nextTask,
  type ServerFrame,
  serverFrames,
} from "./wire.ts";
import { within } from "../wait.ts";

const GREETING = new TextEncoder().encode("HTTP/1.1 101 Switching Protocols\r\n\r\n");

/** A socket whose writes are recorded; with `holdWrites`, each stays in flight until released. */
class FakeSocket extends Duplex {
  readonly writes: Uint8Array[] = [];
  holdWrites = false;
  #held: ((error?: Error | null) => void)[] = [];

  override _read(): void {}

  override _write(
    chunk: Uint8Array,
    _encoding: string,
    callback: (error?: Error | null) => void,
  ): void {
    this.writes.push(new Uint8Array(chunk));
    if (this.holdWrites) this.#held.push(callback);
    else callback();
  }

  /** Completes the writes in flight (optionally with an error). */
  release(error?: Error): void {
    const held = this.#held;
    this.#held = [];
    for (const callback of held) callback(error);
  }

  /** Every byte written, the 101 answer checked and removed, as frames. */
  frames(): ServerFrame[] {
    const all = concat(this.writes);
    assert.deepEqual(all.subarray(0, GREETING.length), GREETING, "the 101 answer comes first");
    return serverFrames(all.subarray(GREETING.length));
  }

  /** The peer sends `bytes`. */
  receive(...frames: Uint8Array[]): void {
    this.push(concat(frames));
  }

  /** The peer closes its side of the TCP connection. */
  peerEnds(): void {
    this.push(null);
  }
}

/** Records what the connection reports, and the order of `onGone` and `onClose`. */
class Recorder implements ConnectionHandler {
  readonly log: string[] = [];
  drains = 0;
  readonly messages: [string | ArrayBuffer, number][] = [];
  readonly causes: CloseCause[] = [];
  /** What `onClose` said the socket reported. */
  error: string | undefined;
  readonly #closed = Promise.withResolvers<CloseCause>();

  onOpen(): void {
    this.log.push("open");
  }

  onMessage(data: string | ArrayBuffer, bytes: number): void {
    this.log.push("message");
    this.messages.push([data, bytes]);
  }

  onDrain(): void {
    this.drains++;
  }

  onClose(cause: CloseCause, error?: string): void {
    this.log.push(`close ${cause}`);
    this.causes.push(cause);
    this.error = error;
    this.#closed.resolve(cause);
  }

  /** The cause `onClose` reports, within a bound. */
  closed(): Promise<CloseCause> {
    return within(this.#closed.promise, "onClose", 2000);
  }
}

const OPTIONS: ConnectionOptions = {
  maxMessageBytes: 1000,
  idleTimeoutMs: 0,
  closeTimeoutMs: 1000,
  sendBufferBytes: 1 << 20,
  sendBufferMaxBytes: 1 << 20,
  sendTimeoutMs: 0,
};

/** A pool of one or more connections, recording `gone` in each handler's log. */
class Pool implements ConnectionPool {
  bufferedBytes = 0;
  overCaps = 0;
  readonly handlers = new Map<WebSocketConnection, Recorder>();
  constructor(readonly maxBufferedBytes = 0) {}
  overCap(): void {
    this.overCaps++;
  }
  gone(connection: WebSocketConnection): void {
    this.handlers.get(connection)?.log.push("gone");
  }
}

/** A started connection over a fake socket. */
function open(
  options: Partial<ConnectionOptions> = {},
  head: Uint8Array = new Uint8Array(0),
  pool = new Pool(),
) {
  const socket = new FakeSocket();
  const handler = new Recorder();
  const connection = new WebSocketConnection(
    socket,
    { ...OPTIONS, ...options },
    GREETING,
    head,
    pool,
  );
  pool.handlers.set(connection, handler);
  connection.start(handler);
  return { socket, handler, connection, pool };
}

const text = (data: string) => Outbound.of(data);

function closeFrames(frames: ServerFrame[]): { code: number | undefined; reason: string }[] {
  return frames.filter((f) => f.opcode === Opcode.CLOSE).map((f) => closeOf(f.payload));
}

/** Lets the peer end after our side ended, and returns the cause reported. */
async function finish(socket: FakeSocket, handler: Recorder): Promise<CloseCause> {
  socket.peerEnds();
  const cause = await handler.closed();
  assert.equal(handler.causes.length, 1, "onClose called once");
  return cause;
}

Deno.test("the 101 answer and every frame sent in the same task go out in one write", async () => {
  const { socket, connection, handler } = open();
  for (let i = 0; i < 100; i++) assert.equal(connection.send(text(`m${i}`)), "sent");
  await nextTask();
  assert.equal(socket.writes.length, 1);
  assert.deepEqual(
    socket.frames().map((f) => new TextDecoder().decode(f.payload)),
    Array.from({ length: 100 }, (_, i) => `m${i}`),
  );
  // A later task's batch is one more write.
  for (let i = 0; i < 50; i++) connection.send(text("again"));
  await nextTask();
  assert.equal(socket.writes.length, 2);
  assert.equal(serverFrames(socket.writes[1]).length, 50);
  connection.close(1000, "");
  socket.destroy();
  await handler.closed();
});

Deno.test("each connection gets one write for what it queued in a task", async () => {
  const a = open();
  const b = open();
  for (let i = 0; i < 10; i++) {
    a.connection.send(text("to a"));
    b.connection.send(text("to b"));
  }
  await nextTask();
  assert.equal(a.socket.writes.length, 1);
  assert.equal(b.socket.writes.length, 1);
  for (const { socket, handler } of [a, b]) {
    socket.destroy();
    await handler.closed();
  }
});

Deno.test("frames queued while a write is in flight go out together in the next write", async () => {
  const { socket, connection, handler } = open();
  socket.holdWrites = true;
  connection.send(text("A"));
  await nextTask();
  assert.equal(socket.writes.length, 1, "101 + A in flight");
  connection.send(text("B"));
  await nextTask();
  connection.send(text("C"));
  connection.send(text("D"));
  await nextTask();
  assert.equal(socket.writes.length, 1, "nothing written while the first write is in flight");
  socket.release();
  await nextTask();
  assert.equal(socket.writes.length, 2);
  assert.deepEqual(
    serverFrames(socket.writes[1]).map((f) => new TextDecoder().decode(f.payload)),
    ["B", "C", "D"],
  );
  socket.release();
  await nextTask();
  assert.equal(socket.writes.length, 2, "nothing left to write");
  socket.destroy();
  await handler.closed();
});

Deno.test("send() refuses a frame that would pass the hard limit, and queues nothing", async () => {
  const message = text("x".repeat(200));
  const frame = message.frame.length;
  const { socket, connection, handler } = open({
    sendBufferBytes: GREETING.length + frame,
    sendBufferMaxBytes: GREETING.length + 2 * frame,
  });
  socket.holdWrites = true;
  await nextTask();
  // The 101 answer is in flight: it is still held.
  assert.equal(connection.bufferedAmount, GREETING.length);
  assert.equal(connection.send(message), "sent", "within the budget");
  assert.equal(connection.send(message), "sent", "over the budget but exactly at the hard limit");
  assert.equal(connection.bufferedAmount, GREETING.length + 2 * frame);
  assert.equal(connection.send(message), "over_budget");
  assert.equal(connection.bufferedAmount, GREETING.length + 2 * frame, "nothing queued");
  socket.release();
  await nextTask();
  socket.release();
  await nextTask();
  assert.equal(socket.frames().length, 2, "only the two frames that were accepted");
  assert.equal(connection.bufferedAmount, 0);
  socket.destroy();
  await handler.closed();
});

Deno.test("whenDrained() says whether the bytes held are at most half the budget, and onDrain follows the write that brings them there", async () => {
  const message = text("z".repeat(300));
  const frame = message.frame.length;
  const { socket, connection, handler } = open({ sendBufferBytes: 2 * frame + 2 });
  socket.holdWrites = true;
  await nextTask();
  socket.release();
  await nextTask();
  assert.equal(connection.whenDrained(), true, "nothing held");
  connection.send(message);
  assert.equal(connection.whenDrained(), true, "one frame: at most half the budget");
  connection.send(message);
  assert.equal(connection.whenDrained(), false, "two frames: over half");
  assert.equal(connection.whenDrained(), false, "asking again asks for one onDrain");
  await nextTask();
  assert.equal(handler.drains, 0, "the write is in flight: nothing drained yet");
  socket.release();
  await nextTask();
  assert.equal(handler.drains, 1);
  assert.equal(connection.bufferedAmount, 0);
  // Not asked: a completed write calls nothing.
  connection.send(message);
  connection.send(message);
  await nextTask();
  socket.release();
  await nextTask();
  assert.equal(handler.drains, 1);
  // A connection that is closing says no, and never calls onDrain.
  connection.send(message);
  connection.send(message);
  assert.equal(connection.whenDrained(), false);
  connection.close(1000, "");
  assert.equal(connection.whenDrained(), false);
  await nextTask();
  socket.release();
  await nextTask();
  assert.equal(handler.drains, 1);
  socket.destroy();
  await handler.closed();
});

Deno.test("a peer over its budget is evicted with 1013 only once it has stayed over for the send timeout", async () => {
  const message = text("y".repeat(500));
  const { socket, connection, handler } = open({
    sendBufferBytes: 600,
    sendBufferMaxBytes: 1 << 20,
    sendTimeoutMs: 1000,
  });
  socket.holdWrites = true;
  await nextTask();
  for (let i = 0; i < 4; i++) assert.equal(connection.send(message), "sent");
  connection.tick(600);
  connection.tick(300);
  assert.equal(connection.open, true, "a burst within the timeout evicts no one");
  // The peer reads: back under the budget, the clock starts over.
  socket.release();
  await nextTask();
  socket.release();
  await nextTask();
  connection.tick(300);
  for (let i = 0; i < 4; i++) assert.equal(connection.send(message), "sent");
  connection.tick(900);
  assert.equal(connection.open, true, "the clock restarted when the peer caught up");
  connection.tick(200);
  assert.equal(connection.open, false, "over the budget for longer than the send timeout");
  socket.release();
  await nextTask();
  const closes = closeFrames(socket.frames());
  assert.deepEqual(closes, [{ code: 1013, reason: "send buffer full" }]);
  socket.peerEnds();
  assert.equal(await handler.closed(), "slow_consumer");
});

Deno.test("the pool hears of every byte held and released, and of passing its cap", async () => {
  const pool = new Pool(2000);
  const a = open({}, undefined, pool);
  const b = open({}, undefined, pool);
  assert.equal(pool.bufferedBytes, 2 * GREETING.length, "the 101 answers are held until written");
  await nextTask();
  assert.equal(pool.bufferedBytes, 0);
  a.socket.holdWrites = true;
  b.socket.holdWrites = true;
  const message = text("z".repeat(900));
  a.connection.send(message);
  assert.equal(pool.overCaps, 0);
  b.connection.send(message);
  b.connection.send(message);
  assert.equal(pool.overCaps, 1, "the third frame passes 2000 bytes in all");
  assert.equal(pool.bufferedBytes, 3 * message.frame.length);
  // Evicting at once releases everything the connection holds, in flight or not.
  await nextTask();
  b.connection.evict(true);
  assert.equal(pool.bufferedBytes, message.frame.length);
  assert.equal(await b.handler.closed(), "slow_consumer");
  a.socket.release();
  await nextTask();
  assert.equal(pool.bufferedBytes, 0);
  a.socket.destroy();
  await a.handler.closed();
});

Deno.test("a server close writes a close frame, and the socket ends when the peer answers", async () => {
  const { socket, connection, handler } = open();
  connection.close(4001, "token expired");
  await nextTask();
  assert.deepEqual(closeFrames(socket.frames()), [{ code: 4001, reason: "token expired" }]);
  assert.equal(socket.writableEnded, false, "waiting for the peer's close");
  assert.equal(connection.send(text("late")), "closed");
  connection.close(1000, "again"); // no second close frame
  socket.receive(clientFrame(Opcode.CLOSE, closePayload(4001)));
  await nextTask();
  assert.equal(socket.writableEnded, true);
  assert.equal(closeFrames(socket.frames()).length, 1, "the peer's answer is not answered");
  assert.equal(await finish(socket, handler), "server");
  assert.deepEqual(handler.log, ["open", "gone", "close server"]);
});

Deno.test("a server close the peer never answers destroys the socket after closeTimeoutMs of ticks", async () => {
  const { socket, connection, handler } = open({ closeTimeoutMs: 1000 });
  connection.close(1000, "bye");
  await nextTask();
  connection.tick(600);
  connection.tick(399);
  assert.equal(socket.destroyed, false);
  connection.tick(1);
  assert.equal(socket.destroyed, true);
  assert.equal(await handler.closed(), "server");
  connection.tick(1000); // a tick after the end changes nothing
  assert.deepEqual(handler.causes, ["server"]);
});

Deno.test("a peer's close is answered with the same code, then the socket ends", async () => {
  for (
    const [payload, expected] of [[closePayload(4000, "done"), 4000], [
      closePayload(1001),
      1001,
    ]] as const
  ) {
    const { socket, handler } = open();
    socket.receive(clientFrame(Opcode.CLOSE, payload));
    await nextTask();
    assert.deepEqual(closeFrames(socket.frames()), [{ code: expected, reason: "" }]);
    assert.equal(socket.writableEnded, true);
    assert.equal(await finish(socket, handler), "client_close");
  }
});

Deno.test("a peer's empty close is answered with an empty close", async () => {
  const { socket, handler } = open();
  socket.receive(clientFrame(Opcode.CLOSE));
  await nextTask();
  assert.deepEqual(closeFrames(socket.frames()), [{ code: undefined, reason: "" }]);
  assert.equal(await finish(socket, handler), "client_close");
});

Deno.test("a peer that closes and never closes its TCP side is reset by the deadline", async () => {
  const { socket, connection, handler } = open({ closeTimeoutMs: 500 });
  socket.receive(clientFrame(Opcode.CLOSE, closePayload(1000)));
  await nextTask();
  connection.tick(499);
  assert.equal(socket.destroyed, false);
  connection.tick(1);
  assert.equal(await handler.closed(), "client_close");
});

Deno.test("a protocol violation closes with its code, ends the socket, and names the cause", async () => {
  const cases: [string, Uint8Array, number, CloseCause][] = [
    ["unmasked", clientFrame(Opcode.TEXT, "x", { mask: null }), 1002, "protocol_error"],
    ["unknown opcode", clientFrame(3, "x"), 1002, "protocol_error"],
    ["invalid UTF-8", clientFrame(Opcode.TEXT, new Uint8Array([0xff])), 1007, "protocol_error"],
    ["over the limit", clientFrame(Opcode.BINARY, new Uint8Array(1001)), 1009, "too_large"],
  ];
  for (const [what, frame, code, cause] of cases) {
    const { socket, handler } = open({ maxMessageBytes: 1000 });
    socket.receive(clientFrame(Opcode.TEXT, "before"), frame, clientFrame(Opcode.TEXT, "after"));
    await nextTask();
    const closes = closeFrames(socket.frames());
    assert.equal(closes.length, 1, what);
    assert.equal(closes[0].code, code, what);
    assert.equal(socket.writableEnded, true, what);
    assert.deepEqual(handler.messages, [["before", 6]], what);
    assert.equal(await finish(socket, handler), cause, what);
  }
});

Deno.test("a violation after a server close ends the socket and keeps the server cause", async () => {
  const { socket, connection, handler } = open();
  connection.close(1000, "");
  socket.receive(clientFrame(Opcode.TEXT, "x", { mask: null }));
  await nextTask();
  assert.deepEqual(closeFrames(socket.frames()), [{ code: 1000, reason: "" }]);
  assert.equal(socket.writableEnded, true);
  assert.equal(await finish(socket, handler), "server");
});

Deno.test("messages and pings from the peer after a server close are ignored", async () => {
  const { socket, connection, handler } = open();
  connection.close(1000, "");
  socket.receive(clientFrame(Opcode.TEXT, "late"), clientFrame(Opcode.PING, "p"));
  await nextTask();
  assert.deepEqual(handler.messages, []);
  assert.deepEqual(socket.frames().map((f) => f.opcode), [Opcode.CLOSE]);
  socket.destroy();
  await handler.closed();
});

Deno.test("messages are delivered with their size; a ping is answered with its payload, a pong is not", async () => {
  const { socket, handler } = open();
  socket.receive(
    clientFrame(Opcode.TEXT, "héllo"),
    clientFrame(Opcode.PING, "are you there"),
    clientFrame(Opcode.BINARY, new Uint8Array([1, 2, 3])),
    clientFrame(Opcode.PONG, "unsolicited"),
  );
  await nextTask();
  assert.equal(handler.messages.length, 2);
  assert.deepEqual(handler.messages[0], ["héllo", 6]);
  assert.deepEqual([...new Uint8Array(handler.messages[1][0] as ArrayBuffer)], [1, 2, 3]);
  assert.equal(handler.messages[1][1], 3);
  assert.deepEqual(socket.frames(), [
    { fin: true, opcode: Opcode.PONG, payload: new TextEncoder().encode("are you there") },
  ]);
  socket.destroy();
  await handler.closed();
});

Deno.test("no inbound bytes for half the idle timeout sends a ping; none for the other half closes with 1001", async () => {
  const { socket, connection, handler } = open({ idleTimeoutMs: 1000, closeTimeoutMs: 1000 });
  await nextTask();
  connection.tick(499);
  await nextTask();
  assert.deepEqual(socket.frames(), []);
  connection.tick(1);
  await nextTask();
  assert.deepEqual(socket.frames(), [{
    fin: true,
    opcode: Opcode.PING,
    payload: new Uint8Array(0),
  }]);
  connection.tick(499);
  await nextTask();
  assert.equal(socket.frames().length, 1);
  connection.tick(1);
  await nextTask();
  assert.deepEqual(closeFrames(socket.frames()), [{ code: 1001, reason: "ping not answered" }]);
  assert.equal(socket.writableEnded, true);
  // A dead peer never ends its side: the close deadline releases it.
  connection.tick(1000);
  assert.equal(await handler.closed(), "idle_timeout");
});

Deno.test("any inbound bytes reset the idle clock", async () => {
  const { socket, connection, handler } = open({ idleTimeoutMs: 1000 });
  connection.tick(500);
  socket.receive(clientFrame(Opcode.PONG));
  await nextTask();
  connection.tick(500); // the pong counts: no close
  connection.tick(499);
  socket.receive(clientFrame(Opcode.TEXT, "still here"));
  await nextTask();
  connection.tick(500);
  connection.tick(499);
  await nextTask();
  assert.deepEqual(socket.frames().map((f) => f.opcode), [Opcode.PING]);
  assert.equal(socket.writableEnded, false);
  socket.destroy();
  assert.equal(await handler.closed(), "error");
});

Deno.test("with an idle timeout of 0 the connection never pings", async () => {
  const { socket, connection, handler } = open({ idleTimeoutMs: 0 });
  for (let i = 0; i < 10; i++) connection.tick(1_000_000);
  await nextTask();
  assert.deepEqual(socket.frames(), []);
  socket.destroy();
  await handler.closed();
});

Deno.test("close() with dropQueued discards frames not yet written, but not the close frame", async () => {
  const { socket, connection, handler } = open();
  socket.holdWrites = true;
  connection.send(text("written"));
  await nextTask();
  connection.send(text("dropped 1"));
  connection.send(text("dropped 2"));
  connection.close(1013, "send buffer full", true);
  socket.release();
  await nextTask();
  socket.release();
  await nextTask();
  assert.deepEqual(
    socket.frames().map((f) => f.opcode === Opcode.CLOSE ? closeOf(f.payload) : f.opcode),
    [Opcode.TEXT, { code: 1013, reason: "send buffer full" }],
  );
  socket.destroy();
  await handler.closed();
});

Deno.test("close() with dropQueued before the 101 answer is written still writes it first", async () => {
  const { socket, connection, handler } = open();
  connection.send(text("dropped"));
  connection.close(1013, "", true);
  await nextTask();
  // frames() fails unless the bytes start with the 101 answer.
  assert.deepEqual(closeFrames(socket.frames()), [{ code: 1013, reason: "" }]);
  assert.equal(socket.frames().length, 1);
  socket.destroy();
  await handler.closed();
});

Deno.test("the peer going away without a close frame ends with cause error", async () => {
  const { socket, handler } = open();
  socket.peerEnds();
  assert.equal(await handler.closed(), "error");
  assert.equal(socket.destroyed, true);
  assert.deepEqual(handler.log, ["open", "gone", "close error"]);
});

Deno.test("a socket error ends with cause error, once", async () => {
  const { socket, connection, handler } = open();
  socket.destroy(new Error("connection reset"));
  assert.equal(await handler.closed(), "error");
  assert.equal(connection.send(text("x")), "closed");
  connection.close(1000, "");
  connection.tick(10_000);
  await nextTask();
  assert.deepEqual(handler.causes, ["error"]);
});

Deno.test("a failed write ends the connection with cause error", async () => {
  const { socket, connection, handler } = open();
  socket.holdWrites = true;
  await nextTask();
  connection.send(text("queued behind the failing write"));
  socket.release(Object.assign(new Error("write EPIPE"), { code: "EPIPE" }));
  assert.equal(await handler.closed(), "error");
  assert.equal(handler.error, "EPIPE", "what the socket reported, for the disconnect's log line");
});

Deno.test("a peer that ends without a close frame is an error with nothing more to report", async () => {
  const { socket, handler } = open();
  socket.peerEnds();
  assert.equal(await handler.closed(), "error");
  assert.equal(handler.error, undefined);
});

Deno.test("bytes the peer sent with its handshake are parsed after onOpen", async () => {
  const head = concat([clientFrame(Opcode.TEXT, "early"), clientFrame(Opcode.PING, "p")]);
  const socket = new FakeSocket();
  const handler = new Recorder();
  const connection = new WebSocketConnection(socket, OPTIONS, GREETING, head, new Pool());
  await nextTask();
  assert.deepEqual(handler.log, [], "nothing before start");
  connection.start(handler);
  assert.deepEqual(handler.log, ["open", "message"]);
  assert.deepEqual(handler.messages, [["early", 5]]);
  await nextTask();
  assert.deepEqual(socket.frames().map((f) => f.opcode), [Opcode.PONG]);
  socket.destroy();
  await handler.closed();
});

Deno.test("a close among the handshake's bytes is answered once started", async () => {
  const { socket, handler } = open({}, clientFrame(Opcode.CLOSE, closePayload(1000)));
  await nextTask();
  assert.deepEqual(closeFrames(socket.frames()), [{ code: 1000, reason: "" }]);
  assert.equal(await finish(socket, handler), "client_close");
});
