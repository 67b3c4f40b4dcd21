/**
 * A WebSocket client at the byte level (RFC 6455), for what a browser-like
 * client cannot do: stop reading after the handshake, speak over a TLS
 * connection with a test CA, read a close frame's code, vanish abruptly, and
 * break the protocol on purpose (reserved bits and opcodes, unmasked or
 * oversized frames, bad fragmentation, invalid UTF-8, odd handshakes, a byte
 * stream cut into pieces). Every read has a deadline, so a server that never
 * answers fails the test instead of hanging it.
 *
 * @module
 */

/** A decoded frame. */
export interface Frame {
  /** The opcode; for a message from {@link RawWebSocket.readMessage}, its first frame's. */
  opcode: number;
  payload: Uint8Array;
  fin: boolean;
  /** The three reserved bits: RSV1 is 4, RSV2 is 2, RSV3 is 1. */
  rsv: number;
  /** Whether the frame came masked (a server must never mask). */
  masked: boolean;
}

/** Frame opcodes used in tests. */
export const Opcode = {
  CONTINUATION: 0,
  TEXT: 1,
  BINARY: 2,
  CLOSE: 8,
  PING: 9,
  PONG: 10,
} as const;

/** A frame to put on the wire; everything but the opcode defaults to what a client must send. */
export interface FrameSpec {
  opcode: number;
  /** Strings are sent as UTF-8. @default empty */
  payload?: Uint8Array | string;
  /** @default true */
  fin?: boolean;
  /** The three reserved bits: RSV1 is 4, RSV2 is 2, RSV3 is 1. @default 0 */
  rsv?: number;
  /** Clients must mask; `false` sends the payload in the clear. @default true */
  mask?: boolean;
  /**
   * The length the header announces, when it should differ from the
   * payload's: announce a large frame and send only its header.
   */
  length?: number | bigint;
}

/** What a peer's close frame said. */
export interface Close {
  /** `undefined` for an empty close payload. */
  code: number | undefined;
  /** The reason's bytes (they may be invalid UTF-8). */
  reason: Uint8Array;
  /** Frames that arrived before the close frame. */
  frames: Frame[];
}

/** An opening handshake to send; every default is what a valid client sends. */
export interface UpgradeRequest {
  /** @default "GET" */
  method?: string;
  /** @default "/" */
  path?: string;
  /** @default "127.0.0.1" */
  host?: string;
  /**
   * Headers added to the defaults, or replacing one of the same name (any
   * case); `null` leaves a default out.
   */
  headers?: Record<string, string | null>;
  /** Write the request in pieces of this many bytes. */
  chunkSize?: number;
  /** How long to wait for the response head. @default 5000 */
  timeoutMs?: number;
}

/** The head of the server's answer to an opening handshake. */
export interface UpgradeResponse {
  status: number;
  /** e.g. `HTTP/1.1 101 Switching Protocols`. */
  statusLine: string;
  headers: Headers;
}

/** The `Sec-WebSocket-Key` sent unless another is given (RFC 6455's example nonce). */
export const DEFAULT_KEY = "dGhlIHNhbXBsZSBub25jZQ==";

/** RFC 6455 section 1.3: the GUID the server appends to the key before hashing. */
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** The `Sec-WebSocket-Accept` a server must answer `key` with. */
export async function acceptFor(key: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-1",
    new TextEncoder().encode(key + ACCEPT_GUID),
  );
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

/** A close frame's payload: the code in network order, then the reason. */
export function closePayload(code?: number, reason: Uint8Array | string = ""): Uint8Array {
  if (code === undefined) return new Uint8Array(0);
  return concat(new Uint8Array([code >> 8, code & 0xff]), toBytes(reason));
}

/** One frame's bytes as `spec` describes them. */
export function encodeFrame(spec: FrameSpec): Uint8Array {
  const { opcode, fin = true, rsv = 0, mask = true } = spec;
  const payload = toBytes(spec.payload ?? new Uint8Array(0));
  const length = BigInt(spec.length ?? payload.length);
  const maskBit = mask ? 0x80 : 0;
  const header = [(fin ? 0x80 : 0) | (rsv << 4) | opcode];
  if (length < 126n) header.push(maskBit | Number(length));
  else if (length < 65536n) {
    header.push(maskBit | 126, Number(length >> 8n), Number(length & 0xffn));
  } else {
    header.push(maskBit | 127);
    for (let shift = 56n; shift >= 0n; shift -= 8n) header.push(Number((length >> shift) & 0xffn));
  }
  if (!mask) return concat(new Uint8Array(header), payload);
  const key = crypto.getRandomValues(new Uint8Array(4));
  const masked = payload.map((byte, i) => byte ^ key[i & 3]);
  return concat(new Uint8Array([...header, ...key]), masked);
}

/**
 * Sends an opening handshake on `conn` and reads the head of the answer,
 * whatever its status; `rest` holds the bytes that followed the head.
 */
export async function requestUpgrade(
  conn: Deno.Conn,
  request: UpgradeRequest = {},
): Promise<{ response: UpgradeResponse; rest: Uint8Array }> {
  const { method = "GET", path = "/", host = "127.0.0.1", timeoutMs = 5000 } = request;
  const headers = new Map<string, [string, string]>();
  const set = (name: string, value: string | null) => {
    if (value === null) headers.delete(name.toLowerCase());
    else headers.set(name.toLowerCase(), [name, value]);
  };
  set("Host", host);
  set("Upgrade", "websocket");
  set("Connection", "Upgrade");
  set("Sec-WebSocket-Key", DEFAULT_KEY);
  set("Sec-WebSocket-Version", "13");
  for (const [name, value] of Object.entries(request.headers ?? {})) set(name, value);
  const lines = [
    `${method} ${path} HTTP/1.1`,
    ...[...headers.values()].map(([name, value]) => `${name}: ${value}`),
  ];
  await writeAll(conn, new TextEncoder().encode(`${lines.join("\r\n")}\r\n\r\n`), {
    chunkSize: request.chunkSize,
  });
  const deadline = Date.now() + timeoutMs;
  let received: Uint8Array = new Uint8Array(0);
  while (true) {
    const end = indexOfHeaderEnd(received);
    if (end !== -1) {
      const [statusLine, ...fields] = new TextDecoder().decode(received.subarray(0, end))
        .split("\r\n");
      const responseHeaders = new Headers();
      for (const field of fields) {
        const colon = field.indexOf(":");
        responseHeaders.append(field.slice(0, colon).trim(), field.slice(colon + 1).trim());
      }
      return {
        response: {
          status: Number(statusLine.split(" ")[1]),
          statusLine,
          headers: responseHeaders,
        },
        rest: received.slice(end + 4),
      };
    }
    const chunk = await readChunk(conn, deadline, "the handshake response");
    if (chunk === undefined) throw new Error("connection closed during the handshake");
    received = concat(received, chunk);
  }
}

/** A WebSocket over a raw TCP or TLS connection. */
export class RawWebSocket implements Disposable {
  readonly conn: Deno.Conn;
  /** How long each read waits before the test fails. */
  timeoutMs = 5000;
  #buffer: Uint8Array = new Uint8Array(0);

  private constructor(conn: Deno.Conn, rest: Uint8Array) {
    this.conn = conn;
    this.#buffer = rest;
  }

  /** Completes the opening handshake on `conn`; throws unless the answer is 101. */
  static async handshake(conn: Deno.Conn, request: UpgradeRequest = {}): Promise<RawWebSocket> {
    const { response, rest } = await requestUpgrade(conn, request);
    if (response.status !== 101) throw new Error(`handshake refused: ${response.statusLine}`);
    return new RawWebSocket(conn, rest);
  }

  /** Sends one masked, final frame, as a client normally does. */
  async send(opcode: number, payload: Uint8Array | string): Promise<void> {
    await this.write(encodeFrame({ opcode, payload }));
  }

  /** Sends one frame as `spec` describes it, optionally in pieces of `chunkSize` bytes. */
  async sendFrame(spec: FrameSpec, options: { chunkSize?: number } = {}): Promise<void> {
    await this.write(encodeFrame(spec), options);
  }

  /** Sends several frames in one write (or in pieces of `chunkSize` bytes across them). */
  async sendFrames(specs: FrameSpec[], options: { chunkSize?: number } = {}): Promise<void> {
    await this.write(concat(...specs.map(encodeFrame)), options);
  }

  /** Writes raw bytes, in pieces of `chunkSize` bytes if given, each its own write. */
  async write(bytes: Uint8Array, options: { chunkSize?: number } = {}): Promise<void> {
    await writeAll(this.conn, bytes, options);
  }

  /** Reads the next frame; `undefined` when the connection ended (EOF or reset). */
  async read(): Promise<Frame | undefined> {
    const deadline = Date.now() + this.timeoutMs;
    while (true) {
      const frame = this.#parse();
      if (frame) return frame;
      const chunk = await readChunk(this.conn, deadline, "a frame");
      if (chunk === undefined) return undefined;
      this.#buffer = concat(this.#buffer, chunk);
    }
  }

  /**
   * Reads the next message, its fragments joined, or the next control frame
   * (which may arrive between fragments); `undefined` when the connection ended.
   */
  async readMessage(): Promise<Frame | undefined> {
    let message: Frame | undefined;
    while (true) {
      const frame = await this.read();
      if (frame === undefined) return undefined;
      if (frame.opcode >= Opcode.CLOSE) return frame;
      if (message === undefined) message = frame;
      else {
        message = {
          ...message,
          payload: concat(message.payload, frame.payload),
          fin: frame.fin,
          rsv: message.rsv | frame.rsv,
          masked: message.masked || frame.masked,
        };
      }
      if (message.fin) return message;
    }
  }

  /** Reads frames until a close frame; `undefined` when the connection ended first. */
  async readClose(): Promise<Close | undefined> {
    const frames: Frame[] = [];
    while (true) {
      const frame = await this.read();
      if (frame === undefined) return undefined;
      if (frame.opcode !== Opcode.CLOSE) {
        frames.push(frame);
        continue;
      }
      const { payload } = frame;
      const code = payload.length >= 2 ? (payload[0] << 8) | payload[1] : undefined;
      return { code, reason: payload.slice(2), frames };
    }
  }

  /** Reads frames until a close frame and returns its code. */
  async readCloseCode(): Promise<number | undefined> {
    return (await this.readClose())?.code;
  }

  /**
   * Reads until the server ends the TCP connection (EOF or reset) and returns
   * the frames that came first; fails if it is still open after
   * {@link timeoutMs}.
   */
  async readToEnd(): Promise<Frame[]> {
    const deadline = Date.now() + this.timeoutMs;
    const frames: Frame[] = [];
    while (true) {
      for (let frame = this.#parse(); frame; frame = this.#parse()) frames.push(frame);
      const chunk = await readChunk(this.conn, deadline, "the server to close the connection");
      if (chunk === undefined) return frames;
      this.#buffer = concat(this.#buffer, chunk);
    }
  }

  /** Closes the TCP connection if it is still open. */
  [Symbol.dispose](): void {
    closeQuietly(this.conn);
  }

  #parse(): Frame | undefined {
    const b = this.#buffer;
    if (b.length < 2) return undefined;
    const masked = (b[1] & 0x80) !== 0;
    let length = b[1] & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (b.length < 4) return undefined;
      length = (b[2] << 8) | b[3];
      offset = 4;
    } else if (length === 127) {
      if (b.length < 10) return undefined;
      length = Number(new DataView(b.buffer, b.byteOffset + 2, 8).getBigUint64(0));
      offset = 10;
    }
    const keyAt = offset;
    if (masked) offset += 4;
    if (b.length < offset + length) return undefined;
    let payload = b.slice(offset, offset + length);
    if (masked) payload = payload.map((byte, i) => byte ^ b[keyAt + (i & 3)]);
    const frame = {
      opcode: b[0] & 0x0f,
      payload,
      fin: (b[0] & 0x80) !== 0,
      rsv: (b[0] >> 4) & 0x07,
      masked,
    };
    this.#buffer = b.slice(offset + length);
    return frame;
  }
}

/**
 * One chunk from `conn`; `undefined` at EOF or on a reset (both mean the
 * peer is gone). Past `deadline` the connection is closed, so no read is
 * left pending, and the wait fails.
 */
async function readChunk(
  conn: Deno.Conn,
  deadline: number,
  what: string,
): Promise<Uint8Array | undefined> {
  const chunk = new Uint8Array(65536);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) =>
    timer = setTimeout(() => resolve("timeout"), Math.max(0, deadline - Date.now()))
  );
  try {
    const n = await Promise.race([conn.read(chunk).catch(() => null), timeout]);
    if (n === "timeout") {
      closeQuietly(conn);
      throw new Error(`timed out waiting for ${what}`);
    }
    return n === null ? undefined : chunk.subarray(0, n);
  } finally {
    clearTimeout(timer);
  }
}

async function writeAll(
  conn: Deno.Conn,
  data: Uint8Array,
  { chunkSize = data.length }: { chunkSize?: number } = {},
): Promise<void> {
  // Without this the kernel may merge small writes into one segment.
  if (chunkSize < data.length && "setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  for (let at = 0; at < data.length; at += chunkSize) {
    let rest = data.subarray(at, at + chunkSize);
    while (rest.length > 0) rest = rest.subarray(await conn.write(rest));
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

function toBytes(data: Uint8Array | string): Uint8Array {
  return typeof data === "string" ? new TextEncoder().encode(data) : data;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function indexOfHeaderEnd(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}
