import assert from "node:assert/strict";
import { compileArgs, EMBEDDED_FILES } from "../scripts/compile.ts";
import { RELAY_RUNTIME_FLAGS } from "../runtime_flags.ts";
import { nextJson, TestClient } from "./helpers.ts";
import { RelayProcess, withConfig } from "./process.ts";
import { ChildOutput } from "./child_output.ts";

const ROOT = new URL("../", import.meta.url).pathname;

Deno.test("the compile task bakes in exactly the runtime flags the process tests run with", () => {
  const args = compileArgs("dist/relay");
  const flags = args.filter((arg) => /^--(allow|unstable|v8-flags)/.test(arg));
  assert.deepEqual(flags, [...RELAY_RUNTIME_FLAGS]);
  assert.ok(!args.includes("-A") && !args.includes("--allow-all"));
  for (const file of EMBEDDED_FILES) {
    assert.ok(args.includes(file), `${file} is embedded`);
  }
});

Deno.test("the run task and the README's deno run line carry exactly those runtime flags", async () => {
  const line = `deno run ${RELAY_RUNTIME_FLAGS.join(" ")} main.ts -config-file config.yaml`;
  const { tasks } = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  assert.equal(tasks.run, line);
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  assert.ok(readme.split("\n").includes(line), `README lacks: ${line}`);
});

Deno.test("main.ts under those flags: connect, broadcast, two workers, shutdown", async () => {
  // The same run the binary makes, from an unrelated directory so no deno.json helps.
  await withConfig(
    "server: {host: 127.0.0.1, port: 0, workers: 2, serve_example: true}\n" +
      "websocket: {protocol: json}\nmetrics: {enabled: false}\n",
    async (dir) => {
      const { relay, url } = await RelayProcess.start(["-config-file", "config.yaml"], {
        cwd: dir,
      });
      await using _ = relay;
      const page = await fetch(url.replace("ws", "http"));
      assert.equal(page.status, 200, "the example page is readable");
      await page.body?.cancel();
      const [a, b] = await Promise.all([TestClient.open(url), TestClient.open(url)]);
      for (const client of [a, b]) {
        client.send(JSON.stringify({ type: "subscribe", channel: "c" }));
        assert.equal((await nextJson(client)).type, "subscribed");
      }
      a.send(JSON.stringify({ type: "publish", channel: "c", data: "hi" }));
      for (const client of [a, b]) {
        assert.equal((await nextJson(client)).data, "hi");
      }
      relay.child.kill("SIGTERM");
      for (const client of [a, b]) assert.equal((await client.closed).code, 1001);
      assert.equal(await relay.exit(), 0);
    },
  );
});

/** Where `deno compile` can get its runtime from without the network, if anywhere. */
function denortAvailable(): boolean {
  if (Deno.env.get("DENORT_BIN")) return true;
  const cache = Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`;
  try {
    Deno.statSync(`${cache}/dl/release/v${Deno.version.deno}/denort-${Deno.build.target}.zip`);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "deno task compile builds dist/relay, which prints its version and relays (needs DENORT_BIN or a cached denort)",
  // Skipped where deno compile cannot get its runtime: no DENORT_BIN and none cached.
  ignore: !denortAvailable(),
  async fn() {
    const build = await new Deno.Command(Deno.execPath(), {
      args: ["task", "compile"],
      cwd: ROOT,
    }).output();
    assert.ok(build.success, new TextDecoder().decode(build.stderr));
    const version = await new Deno.Command(`${ROOT}dist/relay`, { args: ["--version"] }).output();
    assert.match(new TextDecoder().decode(version.stdout), /^relay \d+\.\d+\.\d+/);
    const child = new Deno.Command(`${ROOT}dist/relay`, {
      args: ["-config-file", "/dev/null"],
      env: {
        RELAY_SERVER_HOST: "127.0.0.1",
        RELAY_SERVER_PORT: "0",
        RELAY_METRICS_ENABLED: "false",
      },
      stderr: "piped",
    }).spawn();
    const stderr = new ChildOutput("dist/relay", child.stderr);
    const match = await stderr.waitFor(/listening on (ws:\/\/\S+\/)/);
    const [a, b] = await Promise.all([TestClient.open(match[1]), TestClient.open(match[1])]);
    a.send("from the binary");
    assert.equal(await b.next(), "from the binary");
    child.kill("SIGTERM");
    assert.equal((await b.closed).code, 1001);
    await a.closed;
    await stderr.rest();
    assert.equal((await child.status).code, 0);
  },
});
