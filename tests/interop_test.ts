/**
 * Interoperability: WebSocket clients written elsewhere against the relay's
 * own engine, since a server tested only with its own client can share that
 * client's misreadings of RFC 6455. npm `ws`, Deno's runtime WebSocket,
 * Python's `websockets` and Go's gorilla/websocket each send text, binary,
 * fragmented (where the client can), large and multi-byte UTF-8 messages to
 * a relay that echoes to the sender, and must get them back byte for byte;
 * each closes cleanly with 1000 and sees 1009 when a message is over
 * `websocket.max_message_bytes`. npm `ws` also gets a pong for its ping, and
 * speaks `wss://` trusting a certificate made for the run. Python and Go run
 * as child processes (`tests/interop/`) and their tests are skipped, with the
 * reason in their names, when the runtime or the library is not installed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import WebSocket from "ws";
import type { Relay } from "../relay.ts";
import { commandWorks, GO_ENV, selfSigned, startTestRelay, TestClient, within } from "./helpers.ts";

/** A message as a client sends it: the payload of each frame, one for an unfragmented message. */
interface Message {
  text: boolean;
  fragments: Uint8Array[];
}

/** A message as a client received it. */
interface Received {
  text: boolean;
  bytes: Uint8Array;
}

/**
 * One connection's worth of work: send `message` if any, then either wait for
 * its echo and close with 1000 (`close: "client"`) or wait for the server to
 * close (`close: "server"`). The request format of the scripts in `tests/interop/`.
 */
interface Exchange {
  message?: Message;
  close: "client" | "server";
}

/**
 * What the client saw: the echo, and the code of the server's close frame as
 * the client reports it (1005: the frame had none, 1006: there was no frame).
 */
interface Outcome {
  echo?: Received;
  closeCode: number;
}

/** A client implementation and what it can do. */
interface Driver {
  name: string;
  /** Why the client cannot run here; its tests are then skipped, saying so. */
  missing?: string;
  /** Whether it can send a message in fragments of our choosing. */
  fragments: boolean;
  /** Whether those fragments may cut a UTF-8 character (text sent as bytes). */
  cutsCharacters: boolean;
  run(relay: Relay, exchange: Exchange): Promise<Outcome>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Two-, three- and four-byte sequences, so cuts at a fixed byte stride land inside characters. */
const UTF8_TEXT = "ünïcödé — 日本語のテキスト — 🎉🚀 — 𝄞 — ".repeat(8);

function text(value: string): Message {
  return { text: true, fragments: [encoder.encode(value)] };
}

function binary(bytes: Uint8Array): Message {
  return { text: false, fragments: [bytes] };
}

/** `size` bytes with a period (251) that no frame or buffer size shares. */
function pattern(size: number): Uint8Array {
  return Uint8Array.from({ length: size }, (_, i) => i % 251);
}

/** Pieces of `bytes`, `size` each (the last may be shorter). */
function cut(bytes: Uint8Array, size: number): Uint8Array[] {
  const pieces = [];
  for (let at = 0; at < bytes.length; at += size) pieces.push(bytes.subarray(at, at + size));
  return pieces;
}

/** `value` in `count` pieces that each hold whole characters. */
function cutBetweenCharacters(value: string, count: number): Uint8Array[] {
  const characters = Array.from(value);
  const size = Math.ceil(characters.length / count);
  const pieces = [];
  for (let at = 0; at < characters.length; at += size) {
    pieces.push(encoder.encode(characters.slice(at, at + size).join("")));
  }
  return pieces;
}

function received(data: string | ArrayBuffer): Received {
  return typeof data === "string"
    ? { text: true, bytes: encoder.encode(data) }
    : { text: false, bytes: new Uint8Array(data) };
}

/** A client built on the WebSocket API; `send` frames a message as that client can. */
function apiDriver(
  options: Omit<Driver, "run"> & {
    open(url: string): globalThis.WebSocket;
    send(socket: globalThis.WebSocket, message: Message): void;
  },
): Driver {
  return {
    ...options,
    async run(relay, { message, close }) {
      const client = await within(TestClient.wrap(options.open(relay.url)), `${options.name} open`);
      if (message) options.send(client.socket, message);
      if (close === "server") {
        return { closeCode: (await within(client.closed, "the server's close")).code };
      }
      const echo = message ? received(await within(client.next(), "the echo")) : undefined;
      return { echo, closeCode: (await within(client.close(), "the close handshake")).code };
    },
  };
}

/**
 * The part of npm `ws` used here beyond the WebSocket API. `ws` ships no
 * types, and @types/ws brings an @types/node that clashes with Deno's own.
 */
interface NpmWebSocket {
  send(data: Uint8Array, options: { binary: boolean; fin: boolean }): void;
  ping(data: Uint8Array): void;
  once(event: "pong", listener: (data: Uint8Array) => void): void;
}

/** npm `ws`, which frames each `send` with `fin: false` as one fragment. */
function npmWs(options: { ca?: string } = {}): Driver {
  return apiDriver({
    name: "npm ws client",
    fragments: true,
    cutsCharacters: true,
    open: (url) => new WebSocket(url, options),
    send(socket, { text, fragments }) {
      const last = fragments.length - 1;
      fragments.forEach((fragment, i) => {
        (socket as unknown as NpmWebSocket).send(fragment, { binary: !text, fin: i === last });
      });
    },
  });
}

const denoRuntime = apiDriver({
  name: "Deno WebSocket client",
  fragments: false,
  cutsCharacters: false,
  open: (url) => new globalThis.WebSocket(url),
  send(socket, { text, fragments: [payload] }) {
    socket.send(text ? decoder.decode(payload) : payload);
  },
});

/** A line printed by a client in `tests/interop/`. */
interface ClientEvent {
  event: "message" | "close" | "error";
  /** Of a message: whether it came as text, and its payload in base64. */
  text?: boolean;
  data?: string;
  /** Of a close: the code of the server's close frame, as the client reports it. */
  code?: number;
  /** Of an error: what failed. */
  message?: string;
}

/**
 * A client in another runtime: `command` plus the relay's URL, the
 * {@link Exchange} as JSON on stdin, JSON event lines on stdout.
 */
function processDriver(
  options: Omit<Driver, "run"> & { command: string[]; env?: Record<string, string> },
): Driver {
  const [program, ...args] = options.command;
  return {
    ...options,
    async run(relay, exchange) {
      const request = {
        close: exchange.close,
        message: exchange.message && {
          text: exchange.message.text,
          fragments: exchange.message.fragments.map((f) => Buffer.from(f).toString("base64")),
        },
      };
      const child = new Deno.Command(program, {
        args: [...args, relay.url],
        env: options.env,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        // The client bounds each of its waits; this also covers starting the runtime.
        signal: AbortSignal.timeout(20_000),
      }).spawn();
      const stdin = child.stdin.getWriter();
      await stdin.write(encoder.encode(JSON.stringify(request)));
      await stdin.close();
      const { code, stdout, stderr } = await child.output();
      const lines = decoder.decode(stdout).split("\n").filter((line) => line !== "");
      const events: ClientEvent[] = lines.map((line) => JSON.parse(line));
      const failure = events.find((event) => event.event === "error")?.message ?? "";
      assert.equal(code, 0, `${options.name} failed: ${failure}\n${decoder.decode(stderr)}`);
      const message = events.find((event) => event.event === "message");
      const closed = events.find((event) => event.event === "close");
      assert.ok(closed, `${options.name} saw no close: ${JSON.stringify(events)}`);
      return {
        echo: message && { text: message.text!, bytes: Buffer.from(message.data!, "base64") },
        closeCode: closed.code!,
      };
    },
  };
}

/** Debian's python3-websockets is importable only by the system Python, not a pyenv one. */
const SYSTEM_PYTHON = "/usr/bin/python3";
const python = processDriver({
  name: "Python websockets client",
  missing: await commandWorks(SYSTEM_PYTHON, ["-c", "import websockets"])
    ? undefined
    : `${SYSTEM_PYTHON} cannot import websockets (apt-get install python3-websockets)`,
  // websockets sends text fragments as str, so each must be whole characters.
  fragments: true,
  cutsCharacters: false,
  command: [SYSTEM_PYTHON, new URL("./interop/python_client.py", import.meta.url).pathname],
});

const GORILLA_CLIENT = new URL("./interop/gorilla_client.go", import.meta.url).pathname;
const gorilla = processDriver({
  name: "Go gorilla/websocket client",
  // Building once here also fills the build cache, so each test's `go run` only links.
  missing: await commandWorks("go", ["build", "-o", "/dev/null", GORILLA_CLIENT], GO_ENV)
    ? undefined
    : "go cannot build against gorilla/websocket " +
      "(apt-get install golang-go golang-github-gorilla-websocket-dev)",
  fragments: true,
  cutsCharacters: true,
  command: ["go", "run", GORILLA_CLIENT],
  env: GO_ENV,
});

const ECHO_CASES: { name: string; message: Message; needs?: "fragments" | "cutsCharacters" }[] = [
  { name: "text arrives intact", message: text("hello, relay") },
  {
    name: "binary with every byte value arrives intact",
    message: binary(Uint8Array.from({ length: 256 }, (_, i) => i)),
  },
  { name: "multi-byte UTF-8 text arrives intact", message: text(UTF8_TEXT) },
  { name: "a 512 KiB binary message arrives intact", message: binary(pattern(512 * 1024)) },
  {
    name: "fragmented text arrives reassembled",
    message: { text: true, fragments: cutBetweenCharacters(UTF8_TEXT, 4) },
    needs: "fragments",
  },
  {
    name: "fragmented binary arrives reassembled",
    message: { text: false, fragments: cut(pattern(3000), 1000) },
    needs: "fragments",
  },
  {
    name: "text fragmented inside characters arrives reassembled",
    message: { text: true, fragments: cut(encoder.encode(UTF8_TEXT), 7) },
    needs: "cutsCharacters",
  },
];

/** The echo of `message`, as one message whatever its framing. */
function assertEcho(echo: Received | undefined, message: Message): void {
  assert.ok(echo, "no echo");
  const sent = Buffer.concat(message.fragments);
  assert.equal(echo.text, message.text, echo.text ? "text came back as binary" : "binary as text");
  if (message.text) {
    assert.equal(decoder.decode(echo.bytes), decoder.decode(sent));
  } else {
    assert.equal(echo.bytes.length, sent.length);
    assert.ok(Buffer.from(echo.bytes).equals(sent), "binary payload differs");
  }
}

for (const driver of [npmWs(), denoRuntime, python, gorilla]) {
  const test = (name: string, fn: () => Promise<void>) =>
    Deno.test({
      name: `${driver.name}: ${name}${driver.missing ? ` (skipped: ${driver.missing})` : ""}`,
      ignore: driver.missing !== undefined,
      fn,
    });

  for (const { name, message, needs } of ECHO_CASES) {
    if (needs && !driver[needs]) continue;
    test(`${name}, then closes cleanly`, async () => {
      await using relay = await startTestRelay();
      const { echo, closeCode } = await driver.run(relay, { message, close: "client" });
      assertEcho(echo, message);
      assert.equal(closeCode, 1000);
    });
  }

  test("a close with 1000 is answered with 1000", async () => {
    await using relay = await startTestRelay();
    const { closeCode } = await driver.run(relay, { close: "client" });
    assert.equal(closeCode, 1000);
  });

  test("a message over max_message_bytes is closed with 1009", async () => {
    await using relay = await startTestRelay({ websocket: { max_message_bytes: 1024 } });
    const { closeCode } = await driver.run(relay, {
      message: binary(pattern(2048)),
      close: "server",
    });
    assert.equal(closeCode, 1009);
  });

  if (driver.fragments) {
    test("fragments that together pass max_message_bytes are closed with 1009", async () => {
      await using relay = await startTestRelay({ websocket: { max_message_bytes: 1024 } });
      const { closeCode } = await driver.run(relay, {
        message: { text: false, fragments: cut(pattern(2000), 500) },
        close: "server",
      });
      assert.equal(closeCode, 1009);
    });
  }
}

Deno.test({
  name:
    "npm ws client over wss:// trusting the relay's certificate gets its echo and closes cleanly",
  ignore: !(await commandWorks("openssl", ["version"])),
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const { cert, key } = await selfSigned(dir);
      await using relay = await startTestRelay({
        server: { tls: { enabled: true, cert_file: cert, key_file: key } },
      });
      assert.match(relay.url, /^wss:/);
      const driver = npmWs({ ca: await Deno.readTextFile(cert) });
      // Large enough to span many TLS records.
      const message = binary(pattern(512 * 1024));
      const { echo, closeCode } = await driver.run(relay, { message, close: "client" });
      assertEcho(echo, message);
      assert.equal(closeCode, 1000);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("npm ws client: a ping is answered with a pong carrying its payload", async () => {
  await using relay = await startTestRelay();
  const socket: NpmWebSocket & globalThis.WebSocket = new WebSocket(relay.url);
  const client = await within(TestClient.wrap(socket), "npm ws client open");
  const pong = new Promise<Uint8Array>((resolve) => socket.once("pong", resolve));
  socket.ping(encoder.encode("are you there"));
  assert.equal(decoder.decode(await within(pong, "the pong")), "are you there");
  assert.equal((await within(client.close(), "the close handshake")).code, 1000);
});
