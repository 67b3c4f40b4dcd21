import assert from "node:assert/strict";
import { type Browser, chromium, type Page } from "playwright-core";
import { httpBase, startTestRelay } from "./helpers.ts";

/** Debian's Chromium, or another Chromium-based browser named by BROWSER_PATH. */
const BROWSER = Deno.env.get("BROWSER_PATH") ?? "/usr/bin/chromium";
const SCREENSHOT = new URL("../docs/example-chat.png", import.meta.url).pathname;
const EXAMPLE = { server: { serve_example: true }, websocket: { protocol: "json" as const } };

function browserPresent(): boolean {
  try {
    return Deno.statSync(BROWSER).isFile;
  } catch {
    return false;
  }
}

async function withBrowser(body: (browser: Browser) => Promise<void>): Promise<void> {
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
    await body(browser);
  } finally {
    await browser.close();
  }
}

/**
 * What would show in the page's console or network panel as a problem:
 * console errors and warnings, uncaught exceptions, failed or refused
 * requests, and any request for /favicon.ico.
 */
function problems(page: Page): string[] {
  const seen: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") {
      seen.push(`console ${message.type()}: ${message.text()}`);
    }
  });
  page.on("pageerror", (error) => seen.push(`uncaught: ${error.message}`));
  page.on("requestfailed", (request) => seen.push(`failed: ${request.url()}`));
  page.on("request", (request) => {
    if (new URL(request.url()).pathname === "/favicon.ico") seen.push(`requested ${request.url()}`);
  });
  page.on("response", (response) => {
    if (response.status() >= 400) seen.push(`${response.status()}: ${response.url()}`);
  });
  return seen;
}

/** The page's chat lines as "sender: text". */
async function chatLines(page: Page): Promise<string[]> {
  return await page.locator("#log li.message").evaluateAll((items) =>
    items.map((item) =>
      `${item.querySelector(".from")?.textContent}: ${item.querySelector(".text")?.textContent}`
    )
  );
}

Deno.test({
  name:
    "example page in two headless Chromium pages: typed in one, seen in the other with sender and time, console clean (needs Chromium)",
  ignore: !browserPresent(),
  async fn() {
    await using relay = await startTestRelay(EXAMPLE);
    await withBrowser(async (browser) => {
      const pages = await Promise.all([1, 2].map(() => browser.newPage()));
      const seen = pages.map(problems);
      for (const page of pages) {
        await page.setViewportSize({ width: 800, height: 560 });
        await page.goto(httpBase(relay));
        // Connected, and the relay confirmed the subscription.
        await page.locator('#state[data-state="connected"]').waitFor();
        await page.locator("#log li.system", { hasText: "joined chat" }).waitFor();
      }
      const [one, two] = pages;
      await one.fill("#name", "alice");
      await two.fill("#name", "bob");
      const before = Date.now();
      await one.fill("#message", "hello from page one");
      await one.click("#submit");
      await two.locator("#log li.message", { hasText: "hello from page one" }).waitFor();
      await two.fill("#message", "and back from page two");
      await two.press("#message", "Enter");
      await one.locator("#log li.message", { hasText: "and back from page two" }).waitFor();
      const after = Date.now();
      for (const page of pages) {
        assert.deepEqual(await chatLines(page), [
          "alice: hello from page one",
          "bob: and back from page two",
        ]);
        // The time the relay accepted each message, shown and machine-readable.
        for (const time of await page.locator("#log li.message time").all()) {
          const at = Date.parse((await time.getAttribute("datetime"))!);
          assert.ok(at >= before - 1000 && at <= after + 1000, `datetime ${at} is this run's`);
          assert.match(await time.innerText(), /\d{1,2}:\d{2}:\d{2}/);
        }
      }
      assert.deepEqual(seen, [[], []]);
      if (Deno.env.get("UPDATE_SCREENSHOTS") === "1") await one.screenshot({ path: SCREENSHOT });
    });
  },
});

Deno.test({
  name:
    "example page keeps its place across a reload and says reconnecting, then may-have-missed, across a relay restart (needs Chromium)",
  ignore: !browserPresent(),
  async fn() {
    let relay = await startTestRelay(EXAMPLE);
    const port = relay.addr.port;
    try {
      await withBrowser(async (browser) => {
        const page = await browser.newPage();
        const seen = problems(page);
        await page.goto(httpBase(relay));
        await page.locator("#log li.system", { hasText: "joined chat" }).waitFor();
        await page.fill("#name", "alice");
        await page.fill("#message", "before the reload");
        await page.press("#message", "Enter");
        await page.locator("#log li.message", { hasText: "before the reload" }).waitFor();

        // Away from the page while a message is published; back in the same tab.
        await page.goto("about:blank");
        await relay.hub.publish("chat", { from: "server", text: "while the page was away" });
        await page.goto(httpBase(relay));
        await page.locator("#log li.system", { hasText: "rejoined chat; nothing was missed" })
          .waitFor();
        await page.locator("#log li.message", { hasText: "while the page was away" }).waitFor();
        assert.deepEqual(await chatLines(page), [
          "alice: before the reload",
          "server: while the page was away",
        ]);
        assert.deepEqual(seen, []);

        await relay.shutdown();
        await page.locator('#state[data-state="reconnecting"]').waitFor();
        await page.locator("#log li.system", { hasText: "connection lost (1001); reconnecting" })
          .waitFor();
        relay = await startTestRelay({ ...EXAMPLE, server: { serve_example: true, port } });
        await page.locator('#state[data-state="connected"]').waitFor();
        await page.locator("#log li.system", {
          hasText: "rejoined chat after a relay restart; messages may have been missed",
        }).waitFor();
      });
    } finally {
      await relay.shutdown();
    }
  },
});

Deno.test({
  name:
    "example page with #token= connects to a relay with auth: the token goes as a subprotocol beside relay, whose answer Chromium accepts (needs Chromium)",
  ignore: !browserPresent(),
  async fn() {
    await using relay = await startTestRelay({
      ...EXAMPLE,
      auth: { mode: "api_key", api_keys: ["page-key"] },
    });
    await withBrowser(async (browser) => {
      const page = await browser.newPage();
      const seen = problems(page);
      // Connected means the relay had the token (api_key mode) and Chromium
      // accepted the subprotocol it answered with (else it fails the connection).
      await page.goto(`${httpBase(relay)}#token=page-key`);
      await page.locator('#state[data-state="connected"]').waitFor();
      await page.locator("#log li.system", { hasText: "joined chat" }).waitFor();
      assert.deepEqual(seen, []);
    });
  },
});
