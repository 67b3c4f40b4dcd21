/**
 * A WebSocket client at the byte level (RFC 6455), for what a browser-like
 * client cannot do: stop reading after the handshake, speak over a TLS
 * connection with a test CA, read a close frame's code, vanish abruptly.
 *
 * @module
 */

/** A decoded frame. */
export interface Frame {
  opcode: number;
  payload: Uint8Array;
}

/** Frame opcodes used in tests. */
export const Opcode = { TEXT: 1, BINARY: 2, CLOSE: 8, PING: 9, PONG: 10 } as const;

/** A WebSocket over a raw TCP or TLS connection. */
export class RawWebSocket {
  readonly conn: Deno.Conn;
  #buffer: Uint8Array = new Uint8Array(0);

  private constructor(conn: Deno.Conn, rest: Uint8Array) {
    this.conn = conn;
    this.#buffer = rest;
  }

  /** Completes the opening handshake on `conn`; throws unless the answer is 101. */
  static async handshake(
    conn: Deno.Conn,
    options: { host?: string; path?: string; headers?: Record<string, string> } = {},
  ): Promise<RawWebSocket> {
    const { host = "127.0.0.1", path = "/", headers = {} } = options;
    const lines = [
      `GET ${path} HTTP/1.1`,
      `Host: ${host}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version: 13",
      ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
    ];
    await writeAll(conn, new TextEncoder().encode(`${lines.join("\r\n")}\r\n\r\n`));
    let received: Uint8Array = new Uint8Array(0);
    while (true) {
      const end = indexOfHeaderEnd(received);
      if (end !== -1) {
        const head = new TextDecoder().decode(received.subarray(0, end));
        if (!head.startsWith("HTTP/1.1 101")) {
          throw new Error(`handshake refused: ${head.split("\r\n")[0]}`);
        }
        return new RawWebSocket(conn, received.slice(end + 4));
      }
      const chunk = await readSome(conn);
      if (chunk.length === 0) throw new Error("connection closed during the handshake");
      received = concat(received, chunk);
    }
  }

  /** Sends one masked frame, as a client must. */
  async send(opcode: number, payload: Uint8Array | string): Promise<void> {
    const data = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
    const length = data.length;
    const header: number[] = [0x80 | opcode];
    if (length < 126) header.push(0x80 | length);
    else if (length < 65536) header.push(0x80 | 126, length >> 8, length & 0xff);
    else {
      header.push(0x80 | 127, 0, 0, 0, 0);
      header.push((length >>> 24) & 0xff, (length >>> 16) & 0xff, (length >>> 8) & 0xff);
      header.push(length & 0xff);
    }
    const mask = crypto.getRandomValues(new Uint8Array(4));
    const masked = data.map((byte, i) => byte ^ mask[i % 4]);
    await writeAll(this.conn, concat(new Uint8Array([...header, ...mask]), masked));
  }

  /** Reads the next frame; `undefined` when the connection ended. */
  async read(): Promise<Frame | undefined> {
    while (true) {
      const frame = this.#parse();
      if (frame) return frame;
      const chunk = await readSome(this.conn).catch(() => undefined);
      if (chunk === undefined || chunk.length === 0) return undefined;
      this.#buffer = concat(this.#buffer, chunk);
    }
  }

  /** Reads frames until a close frame and returns its code. */
  async readCloseCode(): Promise<number | undefined> {
    while (true) {
      const frame = await this.read();
      if (frame === undefined) return undefined;
      if (frame.opcode === Opcode.CLOSE) {
        return (frame.payload[0] << 8) | frame.payload[1];
      }
    }
  }

  #parse(): Frame | undefined {
    const b = this.#buffer;
    if (b.length < 2) return undefined;
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
    if (b.length < offset + length) return undefined;
    const frame = { opcode: b[0] & 0x0f, payload: b.slice(offset, offset + length) };
    this.#buffer = b.slice(offset + length);
    return frame;
  }
}

async function readSome(conn: Deno.Conn): Promise<Uint8Array> {
  const chunk = new Uint8Array(65536);
  const n = await conn.read(chunk);
  if (n === null) return new Uint8Array(0);
  return chunk.subarray(0, n);
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let rest = data;
  while (rest.length > 0) rest = rest.subarray(await conn.write(rest));
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
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
