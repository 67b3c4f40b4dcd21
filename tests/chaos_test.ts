import assert from "node:assert/strict";
import { runChaos, table } from "../bench/chaos.ts";
import { REDIS_AVAILABLE } from "./redis.ts";

Deno.test({
  name:
    "chaos (quick): under a reset, a relay killed, a FLUSHALL and a stopped Redis, every application gets each number once and in order, or is told to resync",
  ignore: !REDIS_AVAILABLE,
  async fn() {
    const rows = await runChaos({ quick: true });
    const report = table(rows);
    assert.equal(rows.length, 4, report);
    for (const row of rows) {
      assert.equal(row.error, undefined, `${row.fault}: ${row.error}\n${report}`);
      assert.deepEqual(
        [row.duplicates, row.reordered, row.silentGaps, row.refusedDelivered],
        [0, 0, 0, 0],
        `${row.fault}\n${report}`,
      );
      assert.ok(row.pass && row.messages > 0, report);
    }
  },
});
