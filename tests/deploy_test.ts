import assert from "node:assert/strict";
import {
  commandWorks,
  events,
  freePort,
  nextEvent,
  selfSigned,
  startTestRelay,
  TestClient,
} from "./helpers.ts";
import { runRelay, WatchedProcess } from "./process.ts";
import { Opcode, RawWebSocket } from "./raw_ws.ts";

const UNIT = new URL("../deploy/relay.service", import.meta.url).pathname;
const CADDYFILE = new URL("../deploy/Caddyfile", import.meta.url).pathname;
const NGINX_CONF = new URL("../deploy/nginx.conf", import.meta.url).pathname;
const HAVE_CADDY = await commandWorks("caddy", ["version"]);
const HAVE_NGINX = await commandWorks("nginx", ["-v"]);
const HAVE_OPENSSL = await commandWorks("openssl", ["version"]);

/** A temp dir for one test, removed afterwards. */
async function inTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Replaces `from` in `text`, failing if it is not there, so a changed snippet fails loudly. */
function replaceOnce(text: string, from: string | RegExp, to: string): string {
  const replaced = text.replace(from, to);
  assert.notEqual(replaced, text, `not found in the snippet: ${from}`);
  return replaced;
}

async function run(name: string, args: string[], env: Record<string, string> = {}) {
  const output = await new Deno.Command(name, { args, env, stdin: "null" }).output();
  const decoder = new TextDecoder();
  return { ...output, text: decoder.decode(output.stdout) + decoder.decode(output.stderr) };
}

/** Caddy keeps its state (autosaved config, certificates) under these: a temp dir, not $HOME. */
function caddyEnv(dir: string): Record<string, string> {
  return { XDG_CONFIG_HOME: dir, XDG_DATA_HOME: dir };
}

Deno.test({
  name: "deploy/Caddyfile passes caddy validate on the Caddy this machine has (needs caddy)",
  ignore: !HAVE_CADDY,
  async fn() {
    await inTempDir(async (dir) => {
      const { success, text } = await run(
        "caddy",
        ["validate", "--config", CADDYFILE, "--adapter", "caddyfile"],
        caddyEnv(dir),
      );
      assert.ok(success, text);
    });
  },
});

Deno.test({
  name: "deploy/Caddyfile, pointed at a relay on loopback, passes WebSocket messages (needs caddy)",
  ignore: !HAVE_CADDY,
  async fn() {
    await using relay = await startTestRelay();
    await inTempDir(async (dir) => {
      const port = freePort();
      // The shipped site block with plain HTTP on loopback instead of a public name (no ACME),
      // and no admin endpoint (its fixed port may be taken by another Caddy).
      let caddyfile = await Deno.readTextFile(CADDYFILE);
      caddyfile = replaceOnce(caddyfile, /^relay\.example\.com \{/m, `http://127.0.0.1:${port} {`);
      caddyfile = replaceOnce(caddyfile, "127.0.0.1:8443", `127.0.0.1:${relay.addr.port}`);
      await Deno.writeTextFile(`${dir}/Caddyfile`, `{\n\tadmin off\n}\n${caddyfile}`);
      await using caddy = WatchedProcess.spawn(
        "caddy",
        ["run", "--config", `${dir}/Caddyfile`, "--adapter", "caddyfile"],
        { env: caddyEnv(dir) },
      );
      await caddy.waitFor(/serving initial configuration/);
      const registered = events(relay.hub, "connect", 2);
      const url = `ws://127.0.0.1:${port}/`;
      const [a, b] = await Promise.all([TestClient.open(url), TestClient.open(url)]);
      await registered;
      a.send("through caddy");
      assert.equal(await b.next(), "through caddy");
      await Promise.all([a.close(), b.close()]);
    });
  },
});

/**
 * Writes an nginx main config around the shipped snippet: nginx listening on
 * loopback `port` with a fresh self-signed certificate, proxying to
 * `relayPort`, with its pid and logs in `dir`. Returns the config's path.
 */
async function nginxConfig(dir: string, port: number, relayPort: number): Promise<string> {
  const { cert, key } = await selfSigned(dir);
  let site = await Deno.readTextFile(NGINX_CONF);
  site = replaceOnce(site, "/etc/ssl/relay.example.com.pem", cert);
  site = replaceOnce(site, "/etc/ssl/relay.example.com.key", key);
  site = replaceOnce(site, "listen 443 ssl;", `listen 127.0.0.1:${port} ssl;`);
  site = replaceOnce(site, "server 127.0.0.1:8443;", `server 127.0.0.1:${relayPort};`);
  await Deno.writeTextFile(`${dir}/site.conf`, site);
  const main = [
    `pid ${dir}/nginx.pid;`,
    "error_log stderr notice;",
    "daemon off;",
    "events {}",
    `http {\n    access_log off;\n    include ${dir}/site.conf;\n}`,
  ];
  await Deno.writeTextFile(`${dir}/nginx.conf`, `${main.join("\n")}\n`);
  return `${dir}/nginx.conf`;
}

Deno.test({
  name: "deploy/nginx.conf passes nginx -t inside an http block (needs nginx, openssl)",
  ignore: !HAVE_NGINX || !HAVE_OPENSSL,
  async fn() {
    await inTempDir(async (dir) => {
      const conf = await nginxConfig(dir, freePort(), freePort());
      const { success, text } = await run("nginx", ["-t", "-p", dir, "-e", "stderr", "-c", conf]);
      assert.ok(success, text);
    });
  },
});

Deno.test({
  name:
    "deploy/nginx.conf, pointed at a relay on loopback, passes WebSocket messages over TLS (needs nginx, openssl)",
  ignore: !HAVE_NGINX || !HAVE_OPENSSL,
  async fn() {
    await using relay = await startTestRelay();
    await inTempDir(async (dir) => {
      const port = freePort();
      const conf = await nginxConfig(dir, port, relay.addr.port);
      // In a group of its own, so disposing kills its workers with it: an orphaned worker
      // would hold the stderr pipe (and the test) open.
      await using nginx = WatchedProcess.spawn("nginx", ["-p", dir, "-e", "stderr", "-c", conf], {
        group: true,
      });
      await nginx.waitFor(/start worker process/);
      const caCerts = [await Deno.readTextFile(`${dir}/cert.pem`)];
      const open = async () => {
        const registered = nextEvent(relay.hub, "connect");
        const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts });
        const socket = await RawWebSocket.handshake(conn);
        await registered;
        return socket;
      };
      const a = await open();
      const b = await open();
      try {
        await a.send(Opcode.TEXT, "through nginx");
        const frame = await b.read();
        assert.equal(frame?.opcode, Opcode.TEXT);
        assert.equal(new TextDecoder().decode(frame?.payload), "through nginx");
      } finally {
        a.conn.close();
        b.conn.close();
      }
    });
  },
});

for (const name of ["relay.service", "relay@.service"]) {
  Deno.test({
    name: `deploy/${name} passes systemd-analyze verify (needs systemd-analyze)`,
    ignore: !(await commandWorks("systemd-analyze", ["--version"])),
    async fn() {
      // verify checks that ExecStart and the environment file exist: point them at stand-ins.
      const dir = await Deno.makeTempDir();
      try {
        const unit = (await Deno.readTextFile(new URL(`../deploy/${name}`, import.meta.url)))
          .replace("/usr/local/bin/relay", "/bin/true")
          .replace("/etc/relay/%i.env", `${dir}/%i.env`);
        await Deno.writeTextFile(`${dir}/1.env`, "RELAY_METRICS_PORT=9091\n");
        await Deno.writeTextFile(`${dir}/${name}`, unit);
        const output = await new Deno.Command("systemd-analyze", {
          args: ["verify", `${dir}/${name}`],
          env: { SYSTEMD_LOG_COLOR: "0" },
        }).output();
        const stderr = new TextDecoder().decode(output.stderr);
        // Lines about other units on this host are not ours to judge.
        const ours = stderr.split("\n").filter((line) => line.includes(name));
        assert.deepEqual(ours, [], stderr);
        assert.ok(output.success, stderr);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test("deploy/relay.service has the hardening and limits docs/operations.md promises", async () => {
  const unit = await Deno.readTextFile(UNIT);
  for (
    const line of [
      "Type=exec",
      "DynamicUser=yes",
      "ProtectSystem=strict",
      "NoNewPrivileges=yes",
      "LimitNOFILE=65536",
      "Restart=on-failure",
      "ExecStart=/usr/local/bin/relay -config-file /etc/relay/config.yaml",
      "Environment=RELAY_LOG_FORMAT=json",
      "# AmbientCapabilities=CAP_NET_BIND_SERVICE",
    ]
  ) {
    assert.ok(unit.split("\n").includes(line), `missing: ${line}`);
  }
});

Deno.test("deploy/relay@.service shares the port only together with the Redis broker", async () => {
  // Without the broker, instances on one port would be independent relays splitting the clients.
  const unit = await Deno.readTextFile(new URL("../deploy/relay@.service", import.meta.url));
  const env = Object.fromEntries(
    [...unit.matchAll(/^Environment=(\w+)=(.*)$/gm)].map(([, name, value]) => [name, value]),
  );
  assert.equal(env.RELAY_SERVER_REUSE_PORT, "true");
  assert.equal(env.RELAY_BROKER_TYPE, "redis");
  // The relay accepts them and they take effect (the unit's env over a config file's defaults).
  const { code, stdout, stderr } = await runRelay(["-config-file", "/dev/null", "-check"], { env });
  assert.equal(code, 0, stderr);
  assert.match(stdout, /\n {2}reuse_port: true( #[^\n]*)?\n/);
  assert.match(stdout, /\nbroker:\n {2}type: redis( #[^\n]*)?\n/);
});

Deno.test("deploy units keep max_connections under LimitNOFILE by the same headroom", async () => {
  const limits = [];
  for (const name of ["relay.service", "relay@.service"]) {
    const unit = await Deno.readTextFile(new URL(`../deploy/${name}`, import.meta.url));
    const nofile = Number(unit.match(/^LimitNOFILE=(\d+)$/m)?.[1]);
    const max = Number(unit.match(/^Environment=RELAY_SERVER_MAX_CONNECTIONS=(\d+)$/m)?.[1]);
    // The process's own descriptors (about 26, 7 more per worker), Redis, metrics scrapes.
    assert.ok(max > 0 && nofile - max >= 256, `${name}: ${max} connections, ${nofile} descriptors`);
    limits.push({ nofile, max });
  }
  assert.deepEqual(limits[0], limits[1]);
});

/** The metric names `exprs` query, checked against what a relay (two workers) declares. */
async function assertExposed(exprs: string[]): Promise<void> {
  await using relay = await startTestRelay({ server: { workers: 2 } });
  // Declared metrics, with or without samples yet (a labelled counter has none until counted).
  const { hostname, port } = relay.metricsAddr!;
  const text = await (await fetch(`http://${hostname}:${port}/metrics`)).text();
  const exposed = new Set([...text.matchAll(/^# TYPE (\S+)/gm)].map(([, name]) => name));
  const queried = new Set<string>();
  for (const expr of exprs) {
    for (const [name] of expr.matchAll(/\b(?:websocket|relay|process)_[a-z_]+\b/g)) {
      queried.add(name);
    }
  }
  assert.ok(queried.size >= Math.min(exprs.length, 5), `queried ${[...queried]}`);
  for (const name of queried) {
    // A histogram is declared once, under its base name.
    const declared = exposed.has(name) || exposed.has(name.replace(/_(bucket|sum|count)$/, ""));
    assert.ok(declared, `${name} is not exposed`);
  }
}

Deno.test("deploy/grafana-dashboard.json queries only metrics the relay exposes", async () => {
  const dashboard = JSON.parse(
    await Deno.readTextFile(new URL("../deploy/grafana-dashboard.json", import.meta.url)),
  );
  const exprs = dashboard.panels.flatMap((panel: { targets: { expr: string }[] }) =>
    panel.targets.map(({ expr }) => expr)
  );
  assert.ok(exprs.length >= 10);
  await assertExposed(exprs);
});

Deno.test({
  name:
    "deploy/alerts.yaml passes promtool check rules and its unit tests, and queries only metrics the relay exposes",
  ignore: !(await commandWorks("promtool", ["--version"])),
  async fn() {
    const path = new URL("../deploy/alerts.yaml", import.meta.url).pathname;
    const check = await new Deno.Command("promtool", { args: ["check", "rules", path] }).output();
    const out = new TextDecoder().decode(check.stdout) + new TextDecoder().decode(check.stderr);
    assert.equal(check.code, 0, out);
    assert.match(out, /SUCCESS: 6 rules found/);
    const exprs = [...(await Deno.readTextFile(path)).matchAll(/^\s+expr: (.+)$/gm)].map(
      ([, expr]) => expr,
    );
    assert.equal(exprs.length, 6);
    await assertExposed(exprs);
    // Each fires on its series and stays quiet while they do not move (tests/fixtures/alerts_test.yaml).
    const unit = await new Deno.Command("promtool", {
      args: ["test", "rules", "alerts_test.yaml"],
      cwd: new URL("./fixtures/", import.meta.url).pathname,
    }).output();
    const said = new TextDecoder().decode(unit.stdout) + new TextDecoder().decode(unit.stderr);
    assert.equal(unit.code, 0, said);
    assert.match(said, /SUCCESS/);
  },
});
