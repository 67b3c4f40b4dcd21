import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { httpBase, startTestRelay } from "./helpers.ts";

/** Debian's Chromium, or another Chromium-based browser named by BROWSER_PATH. */
const BROWSER = Deno.env.get("BROWSER_PATH") ?? "/usr/bin/chromium";
const SCREENSHOT = new URL("../docs/example-chat.png", import.meta.url).pathname;

function browserPresent(): boolean {
  try {
    return Deno.statSync(BROWSER).isFile;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "example page in two headless Chromium pages: typed in one, seen in the other (needs Chromium)",
  ignore: !browserPresent(),
  async fn() {
    await using relay = await startTestRelay({
      server: { serve_example: true },
      websocket: { protocol: "json" },
    });
    const browser = await chromium.launch({
      executablePath: BROWSER,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    try {
      const pages = await Promise.all([1, 2].map(() => browser.newPage()));
      for (const page of pages) {
        await page.setViewportSize({ width: 800, height: 560 });
        await page.goto(httpBase(relay));
        // Connected, and the relay confirmed the subscription.
        await page.locator('#state[data-state="connected"]').waitFor();
        await page.locator("#log li.system", { hasText: "joined chat" }).waitFor();
      }
      const [one, two] = pages;
      await one.fill("#message", "hello from page one");
      await one.click("#submit");
      await two.locator("#log li.message", { hasText: "hello from page one" }).waitFor();
      await two.fill("#message", "and back from page two");
      await two.press("#message", "Enter");
      await one.locator("#log li.message", { hasText: "and back from page two" }).waitFor();
      assert.deepEqual(await one.locator("#log li.message").allTextContents(), [
        "hello from page one",
        "and back from page two",
      ]);
      if (Deno.env.get("UPDATE_SCREENSHOTS") === "1") await one.screenshot({ path: SCREENSHOT });
    } finally {
      await browser.close();
    }
  },
});
