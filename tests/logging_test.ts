/**
 * Every error reaches the operator through the logger, at `log.level` in
 * `log.format`, one line each: what clients can cause (a publish body cut
 * off, a request `node:http` cannot read) in a real relay process, and what
 * nothing catches (uncaught exceptions, unhandled rejections, a handler that
 * throws) in a child process set up as `main.ts` sets itself up.
 *
 * @module
 */
import assert from "node:assert/strict";
import net from "node:net";
import { RELAY_RUNTIME_FLAGS } from "../runtime_flags.ts";
import { RelayProcess, withConfig } from "./process.ts";
import { within } from "./wait.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** Sends `request` on a fresh connection and resolves with all it got back once closed. */
function exchange(port: number, request: string): Promise<string> {
  return within(
    new Promise((resolve) => {
      let received = "";
      const socket = net.connect(port, "127.0.0.1", () => socket.write(request));
      socket.on("data", (chunk) => received += chunk);
      socket.on("error", () => {});
      socket.on("close", () => resolve(received));
    }),
    `an answer to ${JSON.stringify(request.slice(0, 40))}`,
  );
}

/**
 * A publish whose head promises 1000 bytes of body: once the relay is
 * reading the body (it has answered `100 Continue`), 12 bytes of it, then
 * the client goes away, half-closing (`fin`) or resetting the connection.
 */
function cutPublish(port: number, end: "fin" | "reset"): Promise<void> {
  return within(
    new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.write(
          "POST /api/publish HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer k\r\n" +
            "Expect: 100-continue\r\nContent-Length: 1000\r\n\r\n",
        );
      });
      socket.once("data", () => {
        socket.write('{"channel":"', () => end === "reset" && socket.resetAndDestroy());
        if (end === "fin") socket.end();
      });
      socket.on("error", () => {});
      socket.on("close", () => resolve());
    }),
    `a publish cut off (${end})`,
  );
}

Deno.test("a relay process under log.format: json writes only JSON lines when publish bodies are cut off and requests cannot be read", async () => {
  const yaml = "server:\n  host: 127.0.0.1\n  port: 0\nmetrics:\n  enabled: false\n" +
    "websocket:\n  protocol: json\nauth:\n  publish_keys: [k]\nlog:\n  level: debug\n  format: json\n";
  await withConfig(yaml, async (dir) => {
    const { relay, url } = await RelayProcess.start(["-config-file", `${dir}/config.yaml`], {
      stdout: "piped",
    });
    await using _ = relay;
    const stdout = new Response(relay.child.stdout).text();
    const port = Number(new URL(url).port);
    const cutOff = /"message":"publish request ended before its body: /g;
    const count = (pattern: RegExp) => relay.stderr.match(pattern)?.length ?? 0;

    // The client half-closes mid-body, then resets mid-body.
    await cutPublish(port, "fin");
    await relay.waitFor(cutOff);
    await cutPublish(port, "reset");
    await relay.waitFor(/(publish request ended before its body[^\n]*\n[^]*){2}/);
    assert.equal(count(cutOff), 2);

    // Requests node:http cannot parse get its usual answers, and a log line each.
    assert.match(
      await exchange(port, "NOT HTTP\r\n\r\n"),
      /^HTTP\/1.1 400 Bad Request\r\n/,
    );
    const huge = `GET / HTTP/1.1\r\nHost: relay\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`;
    assert.match(await exchange(port, huge), /^HTTP\/1.1 431 /);

    // Still serving.
    const published = await fetch(`http://127.0.0.1:${port}/api/publish`, {
      method: "POST",
      headers: { authorization: "Bearer k" },
      body: JSON.stringify({ channel: "after", data: 1 }),
    });
    assert.equal(published.status, 202, await published.text());

    relay.child.kill("SIGTERM");
    assert.equal(await relay.exit(), 0, relay.stderr);
    assert.equal(await stdout, "");
    const lines = relay.stderr.trim().split("\n").map((line, i) => {
      try {
        return JSON.parse(line);
      } catch {
        throw new assert.AssertionError({ message: `stderr line ${i + 1} is not JSON: ${line}` });
      }
    });
    assert.deepEqual(lines.filter((line) => ["error", "fatal"].includes(line.level)), []);
    const cuts = lines.filter((line) => line.logger === "relay.publish");
    assert.equal(cuts.length, 2);
    for (const cut of cuts) assert.equal(cut.level, "debug");
    // Logged before the answer was written, so in stderr by the time it was read.
    const unreadable = lines.filter((line) => /^unreadable request .*\(HPE_/.test(line.message));
    assert.deepEqual(
      unreadable.map((line) => [line.level, line.cause.match(/\((HPE_\w+)\)/)?.[1]]),
      [
        ["debug", "HPE_ERROR"],
        ["debug", "HPE_HEADER_OVERFLOW"],
      ],
    );
  });
});

/** Runs `tests/fixtures/error_paths.ts` with logging in `format`. */
async function runFixture(format: "json" | "text") {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...RELAY_RUNTIME_FLAGS, "tests/fixtures/error_paths.ts", format],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

Deno.test("uncaught exceptions, unhandled rejections and throwing handlers are one log line each, with the cause, and the process serves on", async () => {
  const json = await runFixture("json");
  assert.equal(json.code, 0, json.stderr);
  assert.equal(json.stdout, "");
  const lines = json.stderr.trim().split("\n").map((line) => JSON.parse(line));
  // Without the frame each names (" at ... (file:line:col)"), which differs by runtime version.
  const withoutFrame = (message: string) => message.replace(/ at [^;]*(;|$)/, "$1");
  assert.deepEqual(lines.map(({ level, message }) => [level, withoutFrame(message)]), [
    ["error", "uncaught exception: Error: thrown from a timer; serving on"],
    ["error", "uncaught exception: TypeError: thrown from a socket listener; serving on"],
    ["error", "unhandled promise rejection: RangeError: a rejection nobody handles; serving on"],
    ["error", "GET /anything failed: Error: thrown by a request handler"],
    [
      "info",
      'still serving after them; the handler\'s request was answered 500; counted {"exception":2,"rejection":1,"handler":1}',
    ],
  ]);
  for (const line of lines.slice(0, 4)) {
    // Where it was thrown: in the line for text readers, the whole stack for JSON ones.
    assert.match(line.cause, /error_paths\.ts:\d+:\d+/);
    assert.match(line.stack, /\n\s+at /);
  }

  const text = await runFixture("text");
  assert.equal(text.code, 0, text.stderr);
  assert.equal(text.stdout, "");
  const textLines = text.stderr.trim().split("\n");
  assert.equal(textLines.length, 5, text.stderr);
  for (const line of textLines) assert.match(line, /^\S+ \S+ \S+ \[(ERR|INF)\] relay·/);
});
