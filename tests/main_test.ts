import assert from "node:assert/strict";
import { exportSPKI, generateKeyPair } from "jose";
import { parseFlags } from "../cli.ts";
import { VERSION } from "../base/version.ts";
import { KUBERNETES_SERVICE_LINKS, TestClient } from "./helpers.ts";
import { RelayProcess, runRelay, withConfig } from "./process.ts";
import { Opcode, RawWebSocket } from "./raw_ws.ts";

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
  // Booleans as Go's flag package reads them: =value forms, and the last one wins.
  for (
    const [args, check] of [
      [["-check=true"], true],
      [["--check=true"], true],
      [["-check=1"], true],
      [["-check=T"], true],
      [["-check=false"], false],
      [["--check=False"], false],
      [["-check=0"], false],
      [["-check", "-check=false"], false],
      [["-check=false", "-check"], true],
    ] as const
  ) {
    assert.equal(parseFlags([...args]).check, check, args.join(" "));
  }
  assert.equal(parseFlags(["-version=true"]).version, true);
  assert.equal(parseFlags(["-help=false"]).help, false);
  // As in Go, a flag that takes a value takes the next argument, dash or not.
  assert.equal(parseFlags(["-config-file", "-check"]).configFile, "-check");
  assert.throws(
    () => parseFlags(["-check=yes"]),
    /^TypeError: Bad flags: invalid boolean value "yes" for -check: parse error$/,
  );
  assert.throws(() => parseFlags(["-bogus"]), /^TypeError: Bad flags: Unknown option '--bogus'/);
  assert.throws(() => parseFlags(["stray"]), /Bad flags: Unexpected argument 'stray'/);
  // `deno task run -- -check` hands the `--` on; the flags after it still count.
  assert.deepEqual(parseFlags(["-config-file", "c.yaml", "--", "-check"]), {
    configFile: "c.yaml",
    check: true,
    version: false,
    help: false,
  });
  assert.throws(() => parseFlags(["--", "stray"]), /Bad flags: Unexpected argument 'stray'/);
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
    assert.match(stdout, /\n {2}port: 9999 # from RELAY_SERVER_PORT\n/);
    assert.match(stdout, /\n# deployment: .*; settings from the environment: RELAY_SERVER_PORT\n/);
  });
});

Deno.test("relay takes Go's boolean flag forms: -check=true checks, -check=false runs", async () => {
  await withConfig(LOOPBACK, async (dir) => {
    const config = ["-config-file", `${dir}/config.yaml`];
    for (const flag of ["-check=true", "--check=true", "-check=1"]) {
      const { code, stdout } = await runRelay([...config, flag]);
      assert.equal(code, 0, flag);
      assert.match(stdout, /^# effective config from /, flag);
    }
    const version = await runRelay(["-version=true"]);
    assert.equal(version.code, 0);
    assert.equal(version.stdout, `relay ${VERSION}\n`);

    const { relay } = await RelayProcess.start([...config, "-check=false"]);
    await using _ = relay;
    relay.child.kill("SIGTERM");
    assert.equal(await relay.exit(), 0);

    const bad = await runRelay([...config, "-check=maybe"]);
    assert.equal(bad.code, 2);
    assert.equal(
      bad.stderr,
      'relay: Bad flags: invalid boolean value "maybe" for -check: parse error (see relay -help)\n',
    );
  });
});

Deno.test("relay starts among a Kubernetes Service's variables and warns once about other RELAY_*", async () => {
  const env = { ...KUBERNETES_SERVICE_LINKS, RELAY_CMD: "make test", RELAY_SERVER_PROT: "9000" };
  const strays =
    "ignoring environment RELAY_CMD (not a setting), RELAY_SERVER_PROT (not a setting; did you mean RELAY_SERVER_PORT?)";
  await withConfig(`${LOOPBACK}log:\n  format: json\n`, async (dir) => {
    const config = ["-config-file", `${dir}/config.yaml`];
    const { relay } = await RelayProcess.start(config, { env });
    await using _ = relay;
    await relay.waitFor(/"message":"running: /);
    relay.child.kill("SIGTERM");
    assert.equal(await relay.exit(), 0);
    const lines = relay.stderr.trim().split("\n").map((line) => JSON.parse(line));
    assert.deepEqual(
      lines.filter((line) => line.level === "warning").map((line) => line.message),
      [strays],
    );
    assert.ok(
      lines.some((line) =>
        line.message ===
          "running: raw frames, one room, no auth, publish API off, no broker, 1 worker; no settings from the environment"
      ),
    );
    assert.doesNotMatch(relay.stderr, /RELAY_PORT|RELAY_SERVICE/, "service links pass quietly");

    const check = await runRelay([...config, "-check"], { env });
    assert.equal(check.code, 0, check.stderr);
    const comments = check.stdout.split("\n").filter((line) => line.startsWith("#"));
    assert.deepEqual(comments.slice(2), [
      `# warning: ${strays}`,
      `# ignored, Kubernetes service links: ${
        Object.keys(KUBERNETES_SERVICE_LINKS).sort().join(", ")
      }`,
    ]);
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

Deno.test("relay refuses server.serve_example in raw mode, with -check too: exit 2, one line", async () => {
  for (const extra of [[], ["-check"]]) {
    const { code, stderr } = await runRelay(["-config-file", "/dev/null", ...extra], {
      env: { RELAY_SERVER_SERVE_EXAMPLE: "true" },
    });
    assert.equal(code, 2, extra.join(" "));
    assert.equal(
      stderr,
      "relay: environment RELAY_SERVER_SERVE_EXAMPLE: server.serve_example: needs websocket.protocol: json (the example page speaks the channel protocol), got true\n",
    );
  }
});

Deno.test("relay with a missing explicit config file exits 2", async () => {
  const { code, stderr } = await runRelay(["-config-file", "/nonexistent/relay.yaml"]);
  assert.equal(code, 2);
  assert.match(stderr, /^relay: Cannot load config: \/nonexistent\/relay.yaml: No such file/);
  assert.equal(stderr.trim().split("\n").length, 1);
});

/**
 * A failed start's one line: a fatal log line once the config is read (here
 * in text format), where flags and config errors are plain `relay: ` lines.
 */
function startFailure(message: string): RegExp {
  const escaped = message.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`^[-\\d]+ [\\d:.]+ [+-][\\d:]+ \\[FTL\\] relay·main: ${escaped}\n$`);
}

Deno.test("relay exits 1 with one log line when its port is taken, in log.format", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (listener.addr as Deno.NetAddr).port;
    const env = {
      RELAY_SERVER_HOST: "127.0.0.1",
      RELAY_SERVER_PORT: `${port}`,
      RELAY_METRICS_ENABLED: "false",
    };
    const message = `Cannot listen for WebSocket on 127.0.0.1:${port}: address already in use`;
    const text = await runRelay(["-config-file", "/dev/null"], { env });
    assert.equal(text.code, 1);
    assert.match(text.stderr, startFailure(message));
    const json = await runRelay(["-config-file", "/dev/null"], {
      env: { ...env, RELAY_LOG_FORMAT: "json" },
    });
    assert.equal(json.code, 1);
    const lines = json.stderr.trim().split("\n").map((line) => JSON.parse(line));
    assert.deepEqual(lines.map(({ level, message }) => ({ level, message })), [
      { level: "fatal", message },
    ]);
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
    assert.match(stderr, / \[FTL\] relay·main: Cannot read TLS certificate file \/nonexistent\//);
    assert.match(stderr, /^[^\n]*: No such file[^\n]*\n$/);
  });
});

/** Start-up's fatal log line as `-check` prints the same problem: `relay: <message>`. */
function asCheckSays(startStderr: string): string {
  return startStderr.replace(/^.* \[FTL\] relay·main: /, "relay: ");
}

Deno.test("relay -check fails as start-up does on an unreadable TLS or JWT key file", async () => {
  const tls = "server:\n  host: 127.0.0.1\n  port: 0\n  tls:\n    enabled: true\n" +
    "    cert_file: /nonexistent/cert.pem\n    key_file: /nonexistent/key.pem\n" +
    "metrics:\n  enabled: false\n";
  const jwt = `${LOOPBACK}auth:\n  mode: jwt\n  jwt:\n    algorithm: RS256\n` +
    "    public_key_file: /nonexistent/jwt.pem\n";
  for (
    const [yaml, message] of [
      [tls, /^relay: Cannot read TLS certificate file \/nonexistent\/cert.pem: No such file.*\n$/],
      [jwt, /^relay: Cannot read JWT public key file \/nonexistent\/jwt.pem: No such file.*\n$/],
    ] as const
  ) {
    await withConfig(yaml, async (dir) => {
      const config = ["-config-file", `${dir}/config.yaml`];
      const [check, start] = await Promise.all([runRelay([...config, "-check"]), runRelay(config)]);
      assert.equal(check.code, 1);
      assert.equal(check.stdout, "");
      assert.match(check.stderr, message);
      assert.equal(check.code, start.code, "the same code as start-up");
      assert.equal(check.stderr, asCheckSays(start.stderr), "the same message as start-up");
    });
  }
  await withConfig(`${LOOPBACK}auth:\n  mode: jwt\n  jwt:\n    algorithm: ES256\n`, async (dir) => {
    await Deno.writeTextFile(`${dir}/jwt.pem`, "not a key\n");
    const env = { RELAY_AUTH_JWT_PUBLIC_KEY_FILE: `${dir}/jwt.pem` };
    const config = ["-config-file", `${dir}/config.yaml`];
    const check = await runRelay([...config, "-check"], { env });
    assert.equal(check.code, 1);
    assert.match(
      check.stderr,
      new RegExp(`^relay: Cannot use JWT public key file ${dir}/jwt.pem for ES256: `),
    );
    assert.equal(check.stderr, asCheckSays((await runRelay(config, { env })).stderr));

    await Deno.writeTextFile(
      `${dir}/jwt.pem`,
      await exportSPKI((await generateKeyPair("ES256")).publicKey),
    );
    await Deno.writeTextFile(`${dir}/cert.pem`, "");
    await Deno.writeTextFile(`${dir}/key.pem`, "");
    const readable = await runRelay([...config, "-check"], {
      env: {
        ...env,
        RELAY_SERVER_TLS_ENABLED: "true",
        RELAY_SERVER_TLS_CERT_FILE: `${dir}/cert.pem`,
        RELAY_SERVER_TLS_KEY_FILE: `${dir}/key.pem`,
      },
    });
    assert.equal(readable.code, 0, readable.stderr);
  });
});

Deno.test("relay with server.reuse_port and no broker warns that processes will not share messages", async () => {
  const warning =
    "server.reuse_port is true with broker.type: none: each process sharing this port relays only among its own clients, so a message reaches only the clients of the process that received it; set broker.type: redis to join them";
  const yaml = "server:\n  host: 127.0.0.1\n  port: 0\n  reuse_port: true\n" +
    "metrics:\n  enabled: false\nlog:\n  format: json\n";
  await withConfig(
    yaml,
    async (dir) => {
      const config = ["-config-file", `${dir}/config.yaml`];
      const { relay } = await RelayProcess.start(config);
      await using _ = relay;
      relay.child.kill("SIGTERM");
      assert.equal(await relay.exit(), 0);
      const lines = relay.stderr.trim().split("\n").map((line) => JSON.parse(line));
      assert.deepEqual(lines.filter((l) => l.level === "warning").map((l) => l.message), [warning]);

      const check = await runRelay([...config, "-check"]);
      assert.equal(check.code, 0);
      assert.match(
        check.stdout,
        /\n# deployment: .*port shared with other processes \(reuse_port\);/,
      );
      assert.ok(check.stdout.includes(`\n# warning: ${warning}\n`));
      const joined = await runRelay([...config, "-check"], { env: { RELAY_BROKER_TYPE: "redis" } });
      assert.doesNotMatch(joined.stdout, /# warning/);
    },
  );
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

Deno.test("one Ctrl-C under deno task run (SIGINT to the process group) shuts down cleanly, exit 0", async () => {
  const { relay, url } = await RelayProcess.start([], {
    task: true,
    env: {
      RELAY_SERVER_HOST: "127.0.0.1",
      RELAY_SERVER_PORT: "0",
      RELAY_METRICS_ENABLED: "false",
      RELAY_LOG_LEVEL: "debug",
    },
  });
  await using _ = relay;
  const client = await TestClient.open(url);
  await relay.waitFor(/connect /);
  relay.signalGroup("SIGINT");
  assert.equal((await client.closed).code, 1001);
  assert.equal(await relay.exit(), 0, relay.stderr);
  assert.doesNotMatch(relay.stderr, /second signal/);
});

/**
 * A relay whose shutdown waits on a client that has not answered the close:
 * a raw socket that reads nothing until told to, with `shutdown_timeout` and
 * `websocket.close_timeout` at 1h so the wait outlasts the test's second
 * signal.
 */
async function withHeldShutdown(
  body: (relay: RelayProcess, socket: RawWebSocket) => Promise<void>,
): Promise<void> {
  const yaml = LOOPBACK.replace("port: 0\n", "port: 0\n  shutdown_timeout: 1h\n") +
    "websocket:\n  close_timeout: 1h\nlog:\n  level: debug\n";
  await withConfig(yaml, async (dir) => {
    const { relay, url } = await RelayProcess.start(["-config-file", `${dir}/config.yaml`]);
    await using _ = relay;
    const { hostname, port } = new URL(url);
    using conn = await Deno.connect({ hostname, port: Number(port) });
    const socket = await RawWebSocket.handshake(conn);
    await relay.waitFor(/connect /);
    await body(relay, socket);
  });
}

Deno.test("a second signal within 1s of the first is the same request: shutdown goes on, exit 0", async () => {
  await withHeldShutdown(async (relay, socket) => {
    relay.child.kill("SIGTERM");
    await relay.waitFor(/SIGTERM received/);
    // Sent as soon as the first is seen: well inside the 1 s window.
    relay.child.kill("SIGINT");
    await relay.waitFor(/SIGINT within 1s of the first: the same request/);
    assert.equal(await socket.readCloseCode(), 1001);
    await socket.send(Opcode.CLOSE, new Uint8Array([0x03, 0xe8])); // 1000
    // As a client does once the server has ended the TCP connection.
    await socket.readToEnd();
    await socket.conn.closeWrite();
    assert.equal(await relay.exit(), 0, relay.stderr);
    assert.doesNotMatch(relay.stderr, /second signal/);
  });
});

Deno.test("a second signal after the first's 1s window exits 1 without waiting for clients", async () => {
  await withHeldShutdown(async (relay) => {
    relay.child.kill("SIGTERM");
    await relay.waitFor(/shutting down: closing 1 client\b/);
    await relay.waitFor(/1s since the first signal: the next one exits without waiting/);
    relay.child.kill("SIGTERM");
    assert.equal(await relay.exit(), 1, relay.stderr);
    assert.match(relay.stderr, /second signal: exiting without waiting for clients/);
  });
});

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
