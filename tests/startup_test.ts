import assert from "node:assert/strict";
import { classifyEnv, parseConfig } from "../config.ts";
import { checkReport, describeDeployment, readTlsFiles, startupWarnings } from "../startup.ts";

Deno.test("describeDeployment() of the defaults: raw frames to one room, nothing else on", () => {
  assert.equal(
    describeDeployment(parseConfig(""), []),
    "raw frames, one room, no auth, publish API off, no broker, 1 worker; " +
      "no settings from the environment",
  );
});

Deno.test("describeDeployment() names protocol, auth, publish API, broker, workers and env keys", () => {
  const config = parseConfig(
    "websocket:\n  protocol: json\n  echo: false\n" +
      "auth:\n  mode: jwt\n  jwt: {algorithm: ES256, public_key_file: k.pem}\n" +
      "  publish_keys: [p]\n" +
      'broker:\n  type: redis\n  url: "rediss://user:secret@redis.internal:6380/0"\n' +
      "server:\n  reuse_port: true\n",
  );
  assert.equal(
    describeDeployment(config, ["RELAY_SERVER_PORT", "RELAY_AUTH_JWT_SECRET"]),
    "json channels, no echo, auth jwt (ES256), publish API on, " +
      "broker redis over TLS at redis.internal:6380, 1 worker, " +
      "port shared with other processes (reuse_port); " +
      "settings from the environment: RELAY_AUTH_JWT_SECRET, RELAY_SERVER_PORT",
  );
  const rooms = parseConfig(
    "websocket: {rooms: path}\nauth: {mode: api_key, api_keys: [a]}\nserver: {workers: 4}\n",
  );
  assert.equal(
    describeDeployment(rooms, []).split(";")[0],
    "raw frames, a room per URL path, auth api_key (1 key), publish API off, no broker, 4 workers",
  );
});

Deno.test("startupWarnings() warns of reuse_port without a broker, and of stray RELAY_* variables", () => {
  const none = classifyEnv({});
  assert.deepEqual(startupWarnings(parseConfig(""), none), []);
  assert.deepEqual(
    startupWarnings(parseConfig("broker: {type: redis}\nserver: {reuse_port: true}\n"), none),
    [],
  );
  const [reuse] = startupWarnings(parseConfig("server: {reuse_port: true}\n"), none);
  assert.match(reuse, /^server.reuse_port is true with broker.type: none: /);
  assert.deepEqual(
    startupWarnings(parseConfig(""), classifyEnv({ RELAY_SERVER_PROT: "1", RELAY_CMD: "x" })),
    [
      "ignoring environment RELAY_CMD (not a setting), " +
      "RELAY_SERVER_PROT (not a setting; did you mean RELAY_SERVER_PORT?)",
    ],
  );
});

Deno.test("checkReport() heads the effective config with its source, deployment and warnings", () => {
  const env = { RELAY_SERVER_PORT: "9000", RELAY_PORT: "tcp://10.0.0.1:8443" };
  const config = parseConfig("server: {reuse_port: true}\n", { env });
  const report = checkReport({ config, file: "relay.yaml", env: classifyEnv(env) });
  const lines = report.split("\n");
  assert.equal(lines[0], "# effective config from relay.yaml");
  assert.match(
    lines[1],
    /^# deployment: raw frames, .*; settings from the environment: RELAY_SERVER_PORT$/,
  );
  assert.match(lines[2], /^# warning: server.reuse_port is true/);
  assert.equal(lines[3], "# ignored, Kubernetes service links: RELAY_PORT");
  assert.equal(lines[4], "server:");
  assert.ok(lines.includes("  port: 9000 # from RELAY_SERVER_PORT"));
  assert.deepEqual(parseConfig(report), config);
});

Deno.test("readTlsFiles() reads nothing with TLS off and names the file it cannot read", async () => {
  assert.equal(await readTlsFiles({ enabled: false, cert_file: "/x", key_file: "/y" }), undefined);
  await assert.rejects(
    readTlsFiles({
      enabled: true,
      cert_file: "/nonexistent/c.pem",
      key_file: "/nonexistent/k.pem",
    }),
    /^Error: Cannot read TLS certificate file \/nonexistent\/c.pem: No such file/,
  );
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/c.pem`, "cert");
    await assert.rejects(
      readTlsFiles({ enabled: true, cert_file: `${dir}/c.pem`, key_file: `${dir}/k.pem` }),
      new RegExp(`^Error: Cannot read TLS key file ${dir}/k.pem: No such file`),
    );
    await Deno.writeTextFile(`${dir}/k.pem`, "key");
    assert.deepEqual(
      await readTlsFiles({ enabled: true, cert_file: `${dir}/c.pem`, key_file: `${dir}/k.pem` }),
      { cert: "cert", key: "key" },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
