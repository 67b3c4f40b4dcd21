import assert from "node:assert/strict";
import {
  classifyEnv,
  ConfigError,
  DEFAULT_CONFIG,
  durationMs,
  ENV_KEYS,
  formatConfig,
  loadConfig,
  parseConfig,
} from "../config.ts";
import { parseDuration } from "../base/duration.ts";
import { KUBERNETES_SERVICE_LINKS } from "./helpers.ts";

const fails = (yaml: string, message: string | RegExp, env: Record<string, string> = {}) =>
  assert.throws(
    () => parseConfig(yaml, { env }),
    (error: Error) => {
      assert.ok(error instanceof ConfigError, `expected ConfigError, got ${error}`);
      if (typeof message === "string") assert.equal(error.message, message);
      else assert.match(error.message, message);
      return true;
    },
  );

Deno.test("parseConfig() of an empty file gives the documented defaults", () => {
  const config = parseConfig("");
  assert.deepEqual(config, DEFAULT_CONFIG);
  assert.equal(config.server.port, 8443);
  assert.equal(config.server.shutdown_timeout, "10s");
  assert.equal(config.websocket.max_message_bytes, 1048576);
  assert.equal(config.websocket.send_buffer_bytes, 4194304);
  assert.equal(config.websocket.echo, true);
  assert.equal(config.websocket.rooms, "none");
  assert.equal(config.metrics.port, 9090);
  assert.equal(config.metrics.path, "/metrics");
  assert.equal(config.log.level, "info");
});

Deno.test("parseConfig() accepts the shipped config.yaml unchanged", async () => {
  const config = parseConfig(await Deno.readTextFile("config.yaml"));
  assert.deepEqual(config, DEFAULT_CONFIG);
});

Deno.test("parseConfig() names file, line, column, key and value of a bad value", () => {
  fails(
    "server:\n  host: 0.0.0.0\n  port: abc\n",
    'config.yaml:3:9: server.port: expected an integer 0-65535 (0 picks a free port), got "abc"',
  );
  fails("server:\n  port: 70000\n", /^config.yaml:2:9: server.port: .*got 70000$/);
  fails(
    "websocket:\n  idle_timeout: 10 seconds\n",
    'config.yaml:2:17: websocket.idle_timeout: expected a duration like "500ms", "10s" or "1m", got "10 seconds"',
  );
  fails("websocket:\n  rooms: paths\n", /websocket.rooms: expected none or path, got "paths"/);
  fails("log:\n  format: xml\n", /log.format: expected text or json/);
  fails("metrics:\n  path: metrics\n", /metrics.path: expected a path starting with "\/"/);
  fails("websocket:\n  echo: yes please\n", /websocket.echo: expected true or false/);
  fails("server:\n  allowed_origins: https://a\n", /server.allowed_origins: expected a list/);
});

Deno.test("parseConfig() rejects unknown keys and suggests the nearest known one", () => {
  fails(
    "server:\n  prot: 80\n",
    'config.yaml:2:3: server.prot: unknown key; did you mean "port"?',
  );
  fails(
    "websockets:\n  echo: false\n",
    /^config.yaml:1:1: websockets: unknown key; did you mean "websocket"\?/,
  );
  fails("server:\n  zzzzzzzz: 1\n", /server.zzzzzzzz: unknown key; known keys: host, port, tls/);
});

Deno.test("parseConfig() reports every problem, one per line", () => {
  fails("server:\n  port: x\nlog:\n  level: loud\n", /server.port.*\n.*log.level/);
});

Deno.test("parseConfig() reports problems in the order of the file, the environment's last", () => {
  fails(
    "log:\n  level: loud\nwebsocket:\n  echo: maybe\nserver:\n  prot: 1\n  port: x\n",
    [
      'config.yaml:2:10: log.level: expected one of trace, debug, info, warning, error, fatal, got "loud"',
      'config.yaml:4:9: websocket.echo: expected true or false, got "maybe"',
      'config.yaml:6:3: server.prot: unknown key; did you mean "port"?',
      'config.yaml:7:9: server.port: expected an integer 0-65535 (0 picks a free port), got "x"',
      'environment RELAY_METRICS_PORT: metrics.port: expected an integer 0-65535 (0 picks a free port), got "y"',
    ].join("\n"),
    { RELAY_METRICS_PORT: "y" },
  );
});

Deno.test("parseConfig() reports YAML syntax errors with line and column", () => {
  fails("server:\n  port: [1, 2\n", /^config.yaml:\d+:\d+: invalid YAML: /);
  fails(
    "server:\n  port: 1\n  port: 2\n",
    /config.yaml:3:3: invalid YAML: Map keys must be unique/,
  );
  fails("- a\n- b\n", /^config.yaml:1:1: expected a mapping of sections/);
});

Deno.test("parseConfig() requires cert and key files when TLS is on", () => {
  fails(
    "server:\n  tls:\n    enabled: true\n",
    /server.tls.cert_file: required when tls.enabled is true\n.*server.tls.key_file: required/,
  );
});

Deno.test("parseConfig() takes overrides from RELAY_* variables with their types", () => {
  const config = parseConfig("server:\n  port: 1000\n", {
    env: {
      RELAY_SERVER_PORT: "9000",
      RELAY_WEBSOCKET_ECHO: "false",
      RELAY_SERVER_ALLOWED_ORIGINS: "https://a.example, https://b.example",
      RELAY_SERVER_SHUTDOWN_TIMEOUT: "3s",
      RELAY_LOG_LEVEL: "warn",
      PATH: "/usr/bin",
    },
  });
  assert.equal(config.server.port, 9000);
  assert.equal(config.websocket.echo, false);
  assert.deepEqual(config.server.allowed_origins, ["https://a.example", "https://b.example"]);
  assert.equal(config.server.shutdown_timeout, "3s");
  assert.equal(config.log.level, "warning");
  assert.equal(ENV_KEYS.get("RELAY_SERVER_TLS_CERT_FILE")?.join("."), "server.tls.cert_file");
});

Deno.test("parseConfig() names the variable when an override is bad", () => {
  fails(
    "",
    'environment RELAY_SERVER_PORT: server.port: expected an integer 0-65535 (0 picks a free port), got "abc"',
    { RELAY_SERVER_PORT: "abc" },
  );
  fails("", /RELAY_SERVER_TLS_ENABLED.*expected true or false/, {
    RELAY_SERVER_TLS_ENABLED: "maybe",
  });
});

Deno.test("parseConfig() ignores unknown RELAY_* variables; classifyEnv() names them with a suggestion", () => {
  const env = { RELAY_SERVER_PROT: "1", RELAY_CMD: "make test", RELAY_LOG_LEVEL: "debug" };
  const config = parseConfig("server:\n  port: 1000\n", { env });
  assert.equal(config.server.port, 1000);
  assert.equal(config.log.level, "debug");
  const report = classifyEnv(env);
  assert.deepEqual([...report.applied], [["log.level", "RELAY_LOG_LEVEL"]]);
  assert.deepEqual(report.ignored, [
    { name: "RELAY_CMD", reason: "not a setting" },
    { name: "RELAY_SERVER_PROT", reason: "not a setting; did you mean RELAY_SERVER_PORT?" },
  ]);
  assert.deepEqual(report.serviceLinks, []);
});

Deno.test("classifyEnv() recognises Kubernetes service links by name and value, and only those", () => {
  const links = {
    ...KUBERNETES_SERVICE_LINKS,
    RELAY_SERVICE_PORT_WSS: "8443", // a named port
    RELAY_PORT_9090_TCP: "tcp://10.0.0.1:9090", // a second port
    // A Service named relay-redis, and an IPv6 cluster IP over UDP.
    RELAY_REDIS_SERVICE_HOST: "fd00::12",
    RELAY_REDIS_PORT: "udp://[fd00::12]:6379",
    RELAY_REDIS_PORT_6379_UDP: "udp://[fd00::12]:6379",
    RELAY_REDIS_PORT_6379_UDP_ADDR: "fd00::12",
  };
  const report = classifyEnv({ ...links, PATH: "/usr/bin" });
  assert.deepEqual(report.serviceLinks, Object.keys(links).sort());
  assert.deepEqual(report.ignored, []);
  assert.equal(report.applied.size, 0);
  assert.deepEqual(parseConfig("", { env: links }), DEFAULT_CONFIG);

  // The same names with values Kubernetes would not give are somebody's mistake: said aloud.
  const lookalikes = {
    RELAY_SERVICE_HOST: "relay.example",
    RELAY_PORT: "8443",
    RELAY_PORT_8443_TCP: "tcp://10.0.0.1:9999",
    RELAY_PORT_8443_TCP_PORT: "9999",
    RELAY_PORT_8443_TCP_PROTO: "udp",
  };
  const loud = classifyEnv(lookalikes);
  assert.deepEqual(loud.serviceLinks, []);
  assert.deepEqual(loud.ignored.map((v) => v.name), Object.keys(lookalikes).sort());
});

Deno.test("classifyEnv() ignores a service link that lands on a setting's name, and says so", () => {
  // A Service named relay-metrics: RELAY_METRICS_PORT is also metrics.port.
  const env = { RELAY_METRICS_PORT: "tcp://10.0.0.2:9090", RELAY_METRICS_SERVICE_HOST: "10.0.0.2" };
  const report = classifyEnv(env);
  assert.deepEqual(report.ignored, [{
    name: "RELAY_METRICS_PORT",
    reason: "a Kubernetes service link from Service relay-metrics, not a value for metrics.port",
  }]);
  assert.deepEqual(report.serviceLinks, ["RELAY_METRICS_SERVICE_HOST"]);
  assert.equal(parseConfig("", { env }).metrics.port, 9090);
});

Deno.test("loadConfig() reads a file, and a missing one only when not required", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/relay.yaml`;
    await Deno.writeTextFile(path, "server:\n  port: 1234\n");
    const loaded = await loadConfig(path, { env: {} });
    assert.equal(loaded.config.server.port, 1234);
    assert.equal(loaded.file, path);

    const missing = `${dir}/absent.yaml`;
    const defaults = await loadConfig(missing, { required: false, env: {} });
    assert.equal(defaults.file, null);
    assert.deepEqual(defaults.config, DEFAULT_CONFIG);
    await assert.rejects(
      loadConfig(missing, { env: {} }),
      new RegExp(`^ConfigError: Cannot load config: ${missing}: No such file`),
    );
    await Deno.writeTextFile(path, "server:\n  port: nope\n");
    await assert.rejects(loadConfig(path, { env: {} }), new RegExp(`^ConfigError: ${path}:2:9:`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("formatConfig() output parses back to the same config", () => {
  const config = parseConfig("websocket:\n  rooms: path\nlog:\n  format: json\n");
  assert.deepEqual(parseConfig(formatConfig(config)), config);
});

Deno.test("formatConfig() marks the values that came from the environment", () => {
  const env = {
    RELAY_SERVER_PORT: "9000",
    RELAY_SERVER_ALLOWED_ORIGINS: "https://a.example,https://b.example",
    RELAY_AUTH_PUBLISH_KEYS: "",
  };
  const config = parseConfig("", { env });
  const text = formatConfig(config, classifyEnv(env).applied);
  assert.match(text, /\n {2}port: 9000 # from RELAY_SERVER_PORT\n/);
  assert.match(
    text,
    /\n {2}allowed_origins: \[ https:\/\/a.example, https:\/\/b.example \] # from RELAY_SERVER_ALLOWED_ORIGINS\n/,
  );
  assert.match(text, /\n {2}publish_keys: \[\] # from RELAY_AUTH_PUBLISH_KEYS\n/);
  assert.match(text, /\n {2}host: 0.0.0.0\n/, "values from the file or defaults are not marked");
  assert.equal(text.match(/# from /g)?.length, 3);
  assert.deepEqual(parseConfig(text), config);
});

Deno.test("parseDuration() reads Go durations and rejects anything else", () => {
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("10s"), 10_000);
  assert.equal(parseDuration("1m30s"), 90_000);
  assert.equal(parseDuration("1.5h"), 5_400_000);
  assert.equal(parseDuration("250us"), 0.25);
  assert.equal(parseDuration("0"), 0);
  for (const bad of ["", "10", "s", "10 s", "-1s", "1d", "1s!"]) {
    assert.equal(parseDuration(bad), undefined, bad);
  }
  assert.equal(durationMs("2s"), 2000);
  assert.throws(() => durationMs("soon"), RangeError);
});

Deno.test("parseConfig() checks channels, auth, rate limit and workers", () => {
  fails(
    "websocket:\n  protocol: xml\n",
    'config.yaml:2:13: websocket.protocol: expected raw, json or go-ws, got "xml"',
  );
  fails(
    "auth:\n  mode: api_key\n",
    /^config.yaml:2:3: auth.api_keys: required when auth.mode is api_key$/,
  );
  fails("auth:\n  mode: jwt\n", /auth.jwt.secret: required when auth.mode is jwt with HS256/);
  fails(
    "auth:\n  mode: jwt\n  jwt:\n    algorithm: RS256\n",
    /auth.jwt.public_key_file: required when auth.mode is jwt with RS256/,
  );
  fails(
    "auth:\n  jwt:\n    algorithm: none\n",
    /auth.jwt.algorithm: expected one of HS256, RS256, ES256/,
  );
  fails(
    "websocket:\n  rate_limit:\n    messages_per_second: -1\n",
    /expected 0 \(off\) or more, got -1/,
  );
  fails("server:\n  workers: 0\n", /server.workers: expected an integer 1-1024, got 0/);
  fails("channels:\n  history_ttl: forever\n", /channels.history_ttl: expected a duration/);
  const config = parseConfig("", {
    env: { RELAY_AUTH_MODE: "api_key", RELAY_AUTH_API_KEYS: "a, b", RELAY_SERVER_WORKERS: "4" },
  });
  assert.deepEqual(config.auth.api_keys, ["a", "b"]);
  assert.equal(config.server.workers, 4);
});

Deno.test("parseConfig() checks the broker section and its fit with workers", () => {
  fails("broker:\n  type: kafka\n", /broker.type: expected none or redis, got "kafka"/);
  fails(
    "broker:\n  url: localhost:6379\n",
    /broker.url: expected a URL like "redis:\/\/127.0.0.1:6379"/,
  );
  fails(
    "server:\n  workers: 2\nbroker:\n  type: redis\n",
    /^config.yaml:2:12: server.workers: must be 1 with broker.type: redis; run one process per core with server.reuse_port instead, got 2$/,
  );
  assert.equal(parseConfig("broker:\n  type: redis\n").broker.prefix, "relay:");
  fails(`broker:\n  timeout: "0"\n`, /broker.timeout: must be above 0, got "0"/);
  assert.equal(parseConfig("broker:\n  ping_interval: 250ms\n").broker.ping_interval, "250ms");
});
