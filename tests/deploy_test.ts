import assert from "node:assert/strict";
import { commandWorks, startTestRelay } from "./helpers.ts";

const UNIT = new URL("../deploy/relay.service", import.meta.url).pathname;

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

Deno.test("deploy/relay.service has the hardening and limits the README promises", async () => {
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

Deno.test("deploy/grafana-dashboard.json queries only metrics the relay exposes", async () => {
  const dashboard = JSON.parse(
    await Deno.readTextFile(new URL("../deploy/grafana-dashboard.json", import.meta.url)),
  );
  await using relay = await startTestRelay({ server: { workers: 2 } });
  // Declared metrics, with or without samples yet (a labelled counter has none until counted).
  const { hostname, port } = relay.metricsAddr!;
  const text = await (await fetch(`http://${hostname}:${port}/metrics`)).text();
  const exposed = new Set([...text.matchAll(/^# TYPE (\S+)/gm)].map(([, name]) => name));
  const queried = new Set<string>();
  for (const panel of dashboard.panels) {
    for (const { expr } of panel.targets) {
      for (const [name] of expr.matchAll(/\b(?:websocket|relay|process)_[a-z_]+\b/g)) {
        queried.add(name);
      }
    }
  }
  assert.ok(queried.size >= 10);
  for (const name of queried) {
    // A histogram is declared once, under its base name.
    const declared = exposed.has(name) || exposed.has(name.replace(/_(bucket|sum|count)$/, ""));
    assert.ok(declared, `${name} is not exposed`);
  }
});
