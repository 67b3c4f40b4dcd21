/**
 * The JWT `channels` claim's glob patterns ({@link ChannelPatterns},
 * {@link globMatches}): what they match, the same answers as the regular
 * expressions they replace on seeded random inputs, and a pattern built to
 * make a backtracking matcher take exponential time answered at once.
 *
 * The timings (old against new) are `deno run bench/channel_patterns.ts`.
 * A property failure names its seed; rerun that case alone with
 * `GLOB_PROPERTY_SEED=<seed> GLOB_PROPERTY_CASES=1`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ChannelPatterns, globMatches } from "../core/protocol.ts";
import { regexMatcher } from "../bench/channel_patterns.ts";
import { Random } from "./engine/wire.ts";

function envNumber(name: string): number | undefined {
  const value = Deno.env.get(name);
  return value === undefined ? undefined : Number(value);
}

Deno.test("channel patterns: * is any run, ? one character, the rest literal, whole name", () => {
  const patterns = new ChannelPatterns(["process:*", "runs.?", "a*b*c", "exact"]);
  for (
    const allowed of ["process:", "process:proc-1", "runs.7", "abc", "a-b-c", "axxbyyc", "exact"]
  ) {
    assert.ok(patterns.allows(allowed), allowed);
  }
  for (
    const refused of ["process", "runs.17", "runs.", "runsx7", "ab", "acb", "abcd", "exactly", "x"]
  ) {
    assert.ok(!patterns.allows(refused), refused);
  }
  assert.ok(new ChannelPatterns(["*"]).allows("anything.at:all"));
  assert.ok(!new ChannelPatterns([]).allows("a"), "an empty claim allows no channel");
});

Deno.test("channel patterns agree with the regular expressions they replace on random inputs", () => {
  // Small alphabets, so stars, literals and near misses meet often; regex
  // metacharacters and line terminators, where the two could part ways.
  const globChars = ["a", "b", "*", "*", "?", ".", "\\", "(", "|", "+", "\n"];
  const textChars = ["a", "b", "a", "b", ".", "*", "?", "\\", "\n", "\r", "\u2028", "é"];
  const cases = envNumber("GLOB_PROPERTY_CASES") ?? 3000;
  const firstSeed = envNumber("GLOB_PROPERTY_SEED") ?? 1;
  for (let seed = firstSeed; seed < firstSeed + cases; seed++) {
    const random = new Random(seed);
    const word = (chars: string[], max: number) =>
      Array.from({ length: random.int(0, max) }, () => random.pick(chars)).join("");
    const globs = Array.from({ length: random.int(0, 3) }, () => word(globChars, 7));
    const oracle = regexMatcher(globs);
    const patterns = new ChannelPatterns(globs);
    for (let i = 0; i < 20; i++) {
      const text = word(textChars, 9);
      assert.equal(
        patterns.allows(text),
        oracle(text),
        `seed ${seed}: ${JSON.stringify(globs)} against ${JSON.stringify(text)}`,
      );
    }
  }
});

Deno.test("a pattern that makes a backtracking matcher explode is answered against a long name", () => {
  // Ten stars against 5,000 a's: a backtracking regex tries on the order of
  // 5000^10 splits before failing; two pointers take at most 5000 x 22 steps.
  const glob = "*a*a*a*a*a*a*a*a*a*a*b";
  const long = "a".repeat(5000);
  assert.equal(globMatches(glob, long), false);
  assert.equal(globMatches(glob, `${long}b`), true);
  assert.equal(globMatches(glob, `${long}ba`), false);
  assert.equal(new ChannelPatterns(["x", glob]).allows(`${long}b`), true);
});
