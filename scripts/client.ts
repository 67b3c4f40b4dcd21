/**
 * `deno task client URL`: a small WebSocket client for trying the relay from
 * a terminal, so the commands in the README and docs/ need nothing Debian
 * lacks (it ships no websocat). It sends each line typed (or piped) on
 * stdin, or the `--send` texts, as a text frame, and prints every frame it
 * receives on a line of its own.
 *
 *     deno task client ws://localhost:8443/
 *     deno task client ws://localhost:8443/ --send hello --count 1
 *     deno task client ws://localhost:8443/ --header 'Authorization: Bearer k1'
 *     deno task client ws://localhost:8443/ --protocol relay --protocol bearer.k1
 *
 * It exits 0 after `--count` messages, on stdin's end (without `--count`), or
 * when the relay closes the connection cleanly; 1 when it cannot connect or
 * the connection ends before `--count` messages; 2 on bad flags.
 *
 * @module
 */
import { parseArgs } from "node:util";

const USAGE = `Usage: deno task client URL [flags]

  --send TEXT          send TEXT (repeatable) instead of reading stdin
  --count N            exit after receiving N messages
  --header 'K: V'      add a handshake header (repeatable), e.g. 'Authorization: Bearer KEY'
  --protocol NAME      offer a subprotocol (repeatable), e.g. relay, bearer.KEY
  --help               print this help

Without --send, each stdin line is sent as a text frame; at the end of stdin
the client closes (or, with --count, first waits for N messages).`;

/** What the command line asks for. */
export interface ClientArgs {
  url: string;
  send: string[] | undefined;
  count: number | undefined;
  headers: [string, string][];
  protocols: string[];
}

/** Parses the command line; throws a `TypeError` naming the bad flag or value. */
export function parseClientArgs(args: string[]): ClientArgs | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: true,
      options: {
        send: { type: "string", multiple: true },
        count: { type: "string" },
        header: { type: "string", multiple: true },
        protocol: { type: "string", multiple: true },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    throw new TypeError(`Bad flags: ${(error as Error).message.split("\n")[0]}`);
  }
  const { values, positionals } = parsed;
  if (values.help) return "help";
  if (positionals.length !== 1) {
    throw new TypeError(`expected one URL, got ${positionals.length} arguments`);
  }
  const [url] = positionals;
  if (!/^wss?:\/\//.test(url)) throw new TypeError(`URL must start with ws:// or wss://: ${url}`);
  let count: number | undefined;
  if (values.count !== undefined) {
    count = Number(values.count);
    if (!Number.isSafeInteger(count) || count < 1) {
      throw new TypeError(
        `--count: expected a positive integer, got ${JSON.stringify(values.count)}`,
      );
    }
  }
  const headers = (values.header ?? []).map((header): [string, string] => {
    const colon = header.indexOf(":");
    if (colon < 1) {
      throw new TypeError(`--header: expected 'Name: value', got ${JSON.stringify(header)}`);
    }
    return [header.slice(0, colon).trim(), header.slice(colon + 1).trim()];
  });
  return { url, send: values.send, count, headers, protocols: values.protocol ?? [] };
}

/** Lines of `stream`, without their line ends. */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    let end;
    while ((end = rest.indexOf("\n")) !== -1) {
      yield rest.slice(0, end).replace(/\r$/, "");
      rest = rest.slice(end + 1);
    }
  }
  if (rest !== "") yield rest;
}

/** Runs the client until it is done; resolves with the exit code. */
export async function runClient(args: ClientArgs): Promise<number> {
  const { url, send, count, headers, protocols } = args;
  const socket = new WebSocket(url, { protocols, headers });
  socket.binaryType = "arraybuffer";
  const opened = Promise.withResolvers<string | undefined>();
  const closed = Promise.withResolvers<CloseEvent>();
  let received = 0;
  let closing = false;
  const enough = Promise.withResolvers<void>();
  socket.onopen = () => opened.resolve(undefined);
  socket.onerror = (event) => opened.resolve((event as ErrorEvent).message);
  socket.onclose = (event) => {
    opened.resolve("closed during the handshake");
    closed.resolve(event);
  };
  const encoder = new TextEncoder();
  socket.onmessage = ({ data }) => {
    const line = typeof data === "string" ? data : `[binary, ${data.byteLength} bytes]`;
    Deno.stdout.writeSync(encoder.encode(`${line}\n`));
    if (++received === count) enough.resolve();
  };

  const failure = await opened.promise;
  if (failure !== undefined) {
    console.error(`client: Cannot connect to ${url}: ${failure.replace(/^NetworkError: /, "")}`);
    return 1;
  }
  if (Deno.stdin.isTerminal() && send === undefined) {
    console.error(`client: connected to ${url}; type a line to send it, Ctrl-D to close`);
  }

  const input = async () => {
    if (send !== undefined) {
      for (const text of send) socket.send(text);
      return;
    }
    for await (const line of lines(Deno.stdin.readable)) {
      if (socket.readyState !== WebSocket.OPEN) return;
      socket.send(line);
    }
    // End of input: done, unless messages are still awaited.
    if (count === undefined && socket.readyState === WebSocket.OPEN) {
      closing = true;
      socket.close(1000);
    }
  };
  input().catch((error) => {
    console.error(`client: cannot read stdin: ${error.message}`);
    socket.close(1000);
  });

  const ended = await Promise.race([enough.promise.then(() => undefined), closed.promise]);
  if (ended === undefined) {
    socket.close(1000);
    await closed.promise;
    return 0;
  }
  const why = `${ended.code}${ended.reason ? ` ${ended.reason}` : ""}`;
  if (count !== undefined) {
    console.error(`client: connection closed (${why}) after ${received} of ${count} messages`);
    return 1;
  }
  if (!ended.wasClean) {
    console.error(`client: connection lost (${why})`);
    return 1;
  }
  // Closed by the relay rather than by the end of input: say why.
  if (!closing) console.error(`client: the relay closed the connection (${why})`);
  return 0;
}

if (import.meta.main) {
  let args;
  try {
    args = parseClientArgs(Deno.args);
  } catch (error) {
    console.error(`client: ${(error as Error).message} (see --help)`);
    Deno.exit(2);
  }
  if (args === "help") {
    console.log(USAGE);
    Deno.exit(0);
  }
  Deno.exit(await runClient(args));
}
