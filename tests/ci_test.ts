import assert from "node:assert/strict";

const SUMMARY = new URL("../.ci/summary", import.meta.url).pathname;

/** Runs `.ci/summary` over a test log holding `lines`, as `.ci/run` does after `deno task test`. */
async function summarise(lines: string[], status: number) {
  const log = await Deno.makeTempFile();
  try {
    await Deno.writeTextFile(
      log,
      ["running 3 tests from ./tests/a_test.ts", ...lines, ""].join("\n"),
    );
    const output = await new Deno.Command("bash", { args: [SUMMARY, log, `${status}`] }).output();
    return { code: output.code, stdout: new TextDecoder().decode(output.stdout) };
  } finally {
    await Deno.remove(log);
  }
}

Deno.test(".ci/summary ends with passed, failed and skipped from Deno's summary line", async () => {
  assert.deepEqual(
    await summarise(["ok | 210 passed (12 steps) | 0 failed | 4 ignored (61s)"], 0),
    {
      code: 0,
      stdout: "210 passed, 0 failed, 4 skipped\n",
    },
  );
  assert.deepEqual(await summarise(["ok | 12 passed | 0 failed (3s)"], 0), {
    code: 0,
    stdout: "12 passed, 0 failed, 0 skipped\n",
  });
  assert.deepEqual(await summarise(["FAILED | 9 passed | 2 failed | 1 ignored (3s)"], 1), {
    code: 1,
    stdout: "9 passed, 2 failed, 1 skipped\n",
  });
});

Deno.test(".ci/summary fails a run without a summary, or one whose exit status says it failed", async () => {
  assert.deepEqual(await summarise(["error: Module not found"], 1), {
    code: 1,
    stdout: "ci: no test summary found\n0 passed, 1 failed, 0 skipped\n",
  });
  assert.deepEqual(await summarise(["ok | 3 passed | 0 failed (1s)"], 1), {
    code: 1,
    stdout: "3 passed, 1 failed, 0 skipped\n",
  });
});
