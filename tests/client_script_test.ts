import assert from "node:assert/strict";
import { nextEvent, startTestRelay, TestClient } from "./helpers.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** `deno task client ...args`, as the README runs it; resolves with what it printed. */
async function client(
  args: string[],
  options: { stdin?: string; onStart?: () => Promise<void> } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "client", ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  await options.onStart?.();
  const output = await child.output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    // Without deno task's own "Task client ..." line.
    stderr: decoder.decode(output.stderr).replace(/^Task client .*\n/, ""),
  };
}

Deno.test("deno task client --send prints what comes back and exits after --count", async () => {
  await using relay = await startTestRelay();
  const result = await client([relay.url, "--send", "hello", "--send", "again", "--count", "2"]);
  assert.deepEqual(result, { code: 0, stdout: "hello\nagain\n", stderr: "" });
});

Deno.test("deno task client sends stdin lines, and closes at the end of stdin", async () => {
  await using relay = await startTestRelay();
  const counted = await client([relay.url, "--count", "2"], { stdin: "one\ntwo\n" });
  assert.deepEqual(counted, { code: 0, stdout: "one\ntwo\n", stderr: "" });
  // Without --count it closes once stdin ends; the relay sees a clean close.
  const left = nextEvent(relay.hub, "disconnect");
  const uncounted = await client([relay.url], { stdin: "three\n" });
  assert.equal(uncounted.code, 0, uncounted.stderr);
  assert.equal((await left).detail.reason, "client_close");
});

Deno.test("deno task client prints what another client sends", async () => {
  await using relay = await startTestRelay();
  const connected = nextEvent(relay.hub, "connect");
  const result = await client([relay.url, "--count", "1"], {
    onStart: async () => {
      await connected;
      const other = await TestClient.connect(relay);
      other.send("from elsewhere");
      await other.close();
    },
  });
  assert.deepEqual(result, { code: 0, stdout: "from elsewhere\n", stderr: "" });
});

Deno.test("deno task client authenticates with --header or --protocol, and says why it cannot connect", async () => {
  await using relay = await startTestRelay({ auth: { mode: "api_key", api_keys: ["k1"] } });
  const send = ["--send", "in", "--count", "1"];
  for (
    const auth of [
      ["--header", "Authorization: Bearer k1"],
      ["--protocol", "relay", "--protocol", "bearer.k1"],
    ]
  ) {
    assert.deepEqual(await client([relay.url, ...auth, ...send]), {
      code: 0,
      stdout: "in\n",
      stderr: "",
    }, auth.join(" "));
  }
  const refused = await client([relay.url, ...send]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, new RegExp(`^client: Cannot connect to ${relay.url}: .*401\\n$`));
});

Deno.test("deno task client exits 1 when the relay closes before --count, 2 on bad flags", async () => {
  await using relay = await startTestRelay();
  const connected = nextEvent(relay.hub, "connect");
  const cut = await client([relay.url, "--count", "1"], {
    onStart: async () => {
      await connected;
      await relay.shutdown();
    },
  });
  assert.deepEqual(cut, {
    code: 1,
    stdout: "",
    stderr: "client: connection closed (1001 server shutting down) after 0 of 1 messages\n",
  });
  const bad = await client(["http://127.0.0.1/"]);
  assert.equal(bad.code, 2);
  assert.equal(
    bad.stderr,
    "client: URL must start with ws:// or wss://: http://127.0.0.1/ (see --help)\n",
  );
});
