import assert from "node:assert/strict";
import { parseFlags } from "../cli.ts";
import { VERSION } from "../version.ts";
import { TestClient } from "./helpers.ts";
import { RelayProcess, runRelay, withConfig } from "./process.ts";

const LOOPBACK = "server:\n  host: 127.0.0.1\n  port: 0\nmetrics:\n  host: 127.0.0.1\n  port: 0\n";

Deno.test("parseFlags() accepts Go's flag forms", () => {
  for (
    const args of [
      ["-config-file", "x.yaml"],
      ["--config-file", "x.yaml"],
      ["-config-file=x.yaml"],
      ["--config-file=x.yaml"],
    ]
  ) {
    assert.equal(parseFlags(args).configFile, "x.yaml", args.join(" "));
  }
  assert.deepEqual(parseFlags(["-check", "-h"]), {
    configFile: undefined,
    check: true,
    version: false,
    help: true,
  });
  assert.equal(parseFlags(["-version"]).version, true);
  assert.throws(() => parseFlags(["-bogus"]), /^TypeError: Bad flags: Unknown option '--bogus'/);
  assert.throws(() => parseFlags(["stray"]), /Bad flags: Unexpected argument 'stray'/);
  assert.throws(() => parseFlags(["-config-file"]), /Bad flags: Option '--config-file/);
});

Deno.test("relay --version and --help print and exit 0", async () => {
  for (const flag of ["--version", "-version"]) {
    const { code, stdout } = await runRelay([flag]);
    assert.equal(code, 0);
    assert.equal(stdout, `relay ${VERSION}\n`);
  }
  const help = await runRelay(["-help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: relay \[flags\]/);
});

Deno.test("relay with a bad flag exits 2 with one line on stderr", async () => {
  const { code, stderr } = await runRelay(["-verbose"]);
  assert.equal(code, 2);
  assert.equal(stderr, "relay: Bad flags: Unknown option '--verbose' (see relay -help)\n");
});

Deno.test("relay --check accepts every Go flag form and prints the effective config", async () => {
  await withConfig("server:\n  port: 7000\n", async (dir) => {
    for (
      const args of [
        ["-config-file", `${dir}/config.yaml`],
        ["--config-file", `${dir}/config.yaml`],
        [`-config-file=${dir}/config.yaml`],
      ]
    ) {
      const { code, stdout } = await runRelay([...args, "-check"]);
      assert.equal(code, 0, args.join(" "));
      assert.match(stdout, new RegExp(`^# effective config from ${dir}/config.yaml\n`));
      assert.match(stdout, /\n {2}port: 7000\n/);
      assert.match(stdout, /\n {2}send_buffer_bytes: 4194304\n/);
    }
  });
});

Deno.test("relay --check applies RELAY_* overrides", async () => {
  await withConfig("", async (dir) => {
    await Deno.remove(`${dir}/config.yaml`);
    const { code, stdout } = await runRelay(["--check"], {
      cwd: dir,
      env: { RELAY_SERVER_PORT: "9999" },
    });
    assert.equal(code, 0);
    assert.match(stdout, /^# effective config from defaults\n/);
    assert.match(stdout, /\n {2}port: 9999\n/);
  });
});

Deno.test("relay with a bad config exits 2 naming file, line and column", async () => {
  await withConfig("server:\n  port: abc\n", async (dir) => {
    const { code, stderr } = await runRelay(["-config-file", `${dir}/config.yaml`]);
    assert.equal(code, 2);
    assert.equal(
      stderr,
      `relay: ${dir}/config.yaml:2:9: server.port: expected an integer 0-65535 (0 picks a free port), got "abc"\n`,
    );
  });
  await withConfig("server: [\n", async (dir) => {
    const { code, stderr } = await runRelay(["-config-file", `${dir}/config.yaml`]);
    assert.equal(code, 2);
    assert.match(stderr, new RegExp(`^relay: ${dir}/config.yaml:\\d+:\\d+: invalid YAML: `));
  });
});

Deno.test("relay with a missing explicit config file exits 2", async () => {
  const { code, stderr } = await runRelay(["-config-file", "/nonexistent/relay.yaml"]);
  assert.equal(code, 2);
  assert.match(stderr, /^relay: Cannot load config: \/nonexistent\/relay.yaml: No such file/);
  assert.equal(stderr.trim().split("\n").length, 1);
});

Deno.test("relay exits 1 with one line when its port is taken", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (listener.addr as Deno.NetAddr).port;
    const { code, stderr } = await runRelay(["-config-file", "/dev/null"], {
      env: {
        RELAY_SERVER_HOST: "127.0.0.1",
        RELAY_SERVER_PORT: `${port}`,
        RELAY_METRICS_ENABLED: "false",
      },
    });
    assert.equal(code, 1);
    assert.match(
      stderr,
      new RegExp(
        `^relay: Cannot listen for WebSocket on 127.0.0.1:${port}: address already in use\n$`,
      ),
    );
  } finally {
    listener.close();
  }
});

Deno.test("relay exits 1 with one line when TLS files are unreadable", async () => {
  const yaml =
    `${LOOPBACK}  tls:\n    enabled: true\n    cert_file: /nonexistent/cert.pem\n    key_file: /nonexistent/key.pem\n`
      .replace("metrics:\n  host: 127.0.0.1\n  port: 0\n", "") +
    "metrics:\n  enabled: false\n";
  await withConfig(yaml, async (dir) => {
    const { code, stderr } = await runRelay(["-config-file", `${dir}/config.yaml`]);
    assert.equal(code, 1);
    assert.match(
      stderr,
      /^relay: Cannot read TLS certificate file \/nonexistent\/cert.pem: No such file.*\n$/,
    );
  });
});

Deno.test("relay without config.yaml runs on defaults and says so", async () => {
  await withConfig("", async (dir) => {
    await Deno.remove(`${dir}/config.yaml`);
    const { relay } = await RelayProcess.start([], {
      cwd: dir,
      env: {
        RELAY_SERVER_HOST: "127.0.0.1",
        RELAY_SERVER_PORT: "0",
        RELAY_METRICS_ENABLED: "false",
      },
    });
    await using _ = relay;
    assert.match(relay.stderr, /no config.yaml found; running on defaults/);
    relay.child.kill("SIGINT");
    assert.equal(await relay.exit(), 0);
  });
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`relay on ${signal} sends 1001 to every client and exits 0`, async () => {
    await withConfig(`${LOOPBACK}log:\n  level: debug\n  format: json\n`, async (dir) => {
      const { relay, url } = await RelayProcess.start(["-config-file", `${dir}/config.yaml`]);
      await using _ = relay;
      const clients = await Promise.all([1, 2].map(() => TestClient.open(url)));
      await relay.waitFor(/"message":"connect [\s\S]*"message":"connect /);
      clients[0].send("before shutdown");
      for (const client of clients) assert.equal(await client.next(), "before shutdown");
      relay.child.kill(signal);
      for (const client of clients) {
        const closed = await client.closed;
        assert.equal(closed.code, 1001);
        assert.equal(closed.reason, "server shutting down");
      }
      assert.equal(await relay.exit(), 0);
      // json logs: one object per line, connect and disconnect at debug.
      const lines = relay.stderr.trim().split("\n").map((line) => JSON.parse(line));
      assert.ok(lines.some((l) => l.level === "info" && /^shutting down/.test(l.message)));
      assert.equal(lines.filter((l) => l.reason === "shutdown").length, 2);
    });
  });
}

Deno.test("relay with server.workers: 2 runs under its runtime flags and exits 0 on SIGTERM", async () => {
  await withConfig(LOOPBACK, async (dir) => {
    const { relay, url } = await RelayProcess.start(["-config-file", `${dir}/config.yaml`], {
      env: { RELAY_SERVER_WORKERS: "2" },
    });
    await using _ = relay;
    await relay.waitFor(/serving with 2 workers/);
    const client = await TestClient.open(url);
    client.send("through a worker");
    assert.equal(await client.next(), "through a worker");
    relay.child.kill("SIGTERM");
    assert.equal((await client.closed).code, 1001);
    assert.equal(await relay.exit(), 0);
  });
});

Deno.test("relay -check accepts the Go relay's config file unchanged", async () => {
  const file = new URL("./fixtures/go-relay-config.yaml", import.meta.url).pathname;
  const { code, stdout, stderr } = await runRelay(["-config-file", file, "-check"]);
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^# effective config from .*go-relay-config\.yaml\n/);
  assert.match(stdout, /\n {2}port: 8443\n/);
});
