import assert from "node:assert/strict";
import { utf8Length } from "../engine/frame.ts";

Deno.test("utf8Length() matches TextEncoder for 1- to 4-byte characters", () => {
  const encoder = new TextEncoder();
  for (
    const text of [
      "",
      "ascii",
      "héllo",
      "✓ done",
      "emoji 😀 and 𝄞",
      "日本語",
      "\u0000\u007f\u0080\u07ff\u0800\uffff",
    ]
  ) {
    assert.equal(utf8Length(text), encoder.encode(text).length, JSON.stringify(text));
  }
});
