import assert from "node:assert/strict";
import { bench, table } from "../bench/run.ts";

Deno.test("bench runs every scenario kind against both servers with nothing lost", async () => {
  const { rows } = await bench({ quick: true });
  assert.deepEqual(rows.map((r) => r.scenario.kind), ["fanout", "latency", "idle"]);
  for (const { scenario, baseline, relay } of rows) {
    for (const result of [baseline, relay]) {
      assert.equal(
        result.lost + result.reordered + result.wrongType + result.errors,
        0,
        scenario.name,
      );
      assert.ok(result.peakRssKiB > 0);
      if (scenario.kind === "idle") assert.equal(result.connected, scenario.connections);
      else assert.ok(result.deliveriesPerSecond! > 0 && result.cpuMicrosPerDelivery! >= 0);
    }
  }
  assert.match(table(rows), /\| fanout 10x1 64B \| deliveries\/s \|/);
});
