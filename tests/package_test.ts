import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const decoder = new TextDecoder();

async function deno(args: string[], cwd: string): Promise<{ code: number; out: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code, out: decoder.decode(stdout) + decoder.decode(stderr) };
}

Deno.test("deno publish --dry-run accepts the package: explicit types, the library's files and no tests", async () => {
  const { code, out } = await deno(["publish", "--dry-run", "--allow-dirty"], ROOT);
  assert.equal(code, 0, out);
  assert.match(out, /Dry run complete/);
  for (
    const file of [
      "mod.ts",
      "client/reconnecting_client.ts",
      "relay_worker.ts",
      "example/index.html",
      "example/reconnecting_client.js",
      "LICENSE",
    ]
  ) {
    assert.ok(out.includes(`${ROOT}${file} `), `${file} is in the package:\n${out}`);
  }
  assert.doesNotMatch(out, /\/tests\/|\/bench\//, "tests and bench stay out of the package");
});

Deno.test("another Deno project imports both exports and relays a message through them", async () => {
  // A project outside the checkout that links the package, as one does before
  // (or instead of) fetching it from a registry.
  const project = await Deno.makeTempDir({ prefix: "relay-user-" });
  try {
    await Deno.writeTextFile(
      `${project}/deno.json`,
      JSON.stringify({
        links: [ROOT],
        imports: {
          "@relay/relay": "jsr:@relay/relay@^0.1.0",
          "@relay/relay/client": "jsr:@relay/relay@^0.1.0/client",
        },
      }),
    );
    await Deno.writeTextFile(
      `${project}/main.ts`,
      `import { DEFAULT_CONFIG, startRelay, VERSION } from "@relay/relay";
import { ReconnectingClient } from "@relay/relay/client";
const config = structuredClone(DEFAULT_CONFIG);
config.server.host = "127.0.0.1";
config.server.port = 0;
config.metrics.enabled = false;
config.websocket.protocol = "json";
await using relay = await startRelay(config);
const received = Promise.withResolvers<unknown>();
const client = new ReconnectingClient(relay.url, {
  onSubscribed: () => relay.hub.publish("news", "hello from the package"),
  onMessage: (message) => received.resolve(message.data),
});
client.subscribe("news");
const timer = setTimeout(() => received.reject(new Error("no message within 10 s")), 10_000);
console.log(VERSION, await received.promise);
clearTimeout(timer);
client.close();
`,
    );
    const { code, out } = await deno(["run", "-A", "main.ts"], project);
    assert.equal(code, 0, out);
    const version = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).version;
    assert.match(out, new RegExp(`${version.replaceAll(".", "\\.")} hello from the package`));
  } finally {
    await Deno.remove(project, { recursive: true });
  }
});
