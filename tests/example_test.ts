import assert from "node:assert/strict";
import { httpBase, startTestRelay } from "./helpers.ts";

const ROOT = new URL("../", import.meta.url);

Deno.test("example/reconnecting_client.js is the current bundle of reconnecting_client.ts", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "bundle",
        "--quiet",
        "--platform",
        "browser",
        "client/reconnecting_client.ts",
        "-o",
        `${dir}/out.js`,
      ],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
    }).output();
    assert.ok(output.success, new TextDecoder().decode(output.stderr));
    assert.equal(
      await Deno.readTextFile(`${dir}/out.js`),
      await Deno.readTextFile(new URL("example/reconnecting_client.js", ROOT)),
      "stale bundle: run deno task bundle",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server.serve_example serves the page and its client; other paths keep the 426 hint", async () => {
  await using relay = await startTestRelay({
    server: { serve_example: true },
    websocket: { protocol: "json" },
  });
  const page = await fetch(httpBase(relay));
  assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(
    await page.text(),
    /import \{ ReconnectingClient \} from "\.\/reconnecting_client\.js"/,
  );
  const script = await fetch(`${httpBase(relay)}reconnecting_client.js`);
  assert.equal(script.headers.get("content-type"), "text/javascript; charset=utf-8");
  assert.match(await script.text(), /var ReconnectingClient = class/);
  const other = await fetch(`${httpBase(relay)}elsewhere`);
  assert.equal(other.status, 426);
  await other.body?.cancel();
});
