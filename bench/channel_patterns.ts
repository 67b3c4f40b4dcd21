/**
 * The JWT `channels` claim's matcher against the regular expression it
 * replaced, on patterns built to make backtracking explode (`*a*a…*b`
 * against a run of `a`s, which never matches). Prints one line per case;
 * the old matcher runs only on sizes where it ends within seconds, the new
 * one also on the test suite's case (ten stars, 5,000 characters).
 *
 *     deno run bench/channel_patterns.ts
 *
 * {@link regexMatcher} is also the oracle of `tests/channel_patterns_test.ts`.
 *
 * @module
 */
import { globMatches } from "../core/protocol.ts";

/**
 * The matcher `ChannelPatterns` used before: one regular expression built
 * from the claim (`*` to `.*`, `?` to `.`), whose backtracking is
 * exponential in the number of stars.
 */
export function regexMatcher(globs: readonly string[]): (channel: string) => boolean {
  const alternatives = globs.map((glob) =>
    glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replaceAll("*", ".*").replaceAll("?", ".")
  );
  const pattern = new RegExp(`^(?:${alternatives.join("|")})$`);
  return (channel) => pattern.test(channel);
}

function timed(match: () => boolean): string {
  const start = performance.now();
  const matched = match();
  return `${(performance.now() - start).toFixed(3)} ms (${matched ? "match" : "no match"})`;
}

if (import.meta.main) {
  const pathological = (stars: number) => `${"*a".repeat(stars - 1)}*b`;
  // Warm both up, so the first line does not carry compilation.
  for (let i = 0; i < 1000; i++) {
    globMatches(pathological(3), "aaaa");
    regexMatcher([pathological(3)])("aaaa");
  }
  for (const [stars, length] of [[4, 200], [4, 400], [6, 40], [6, 60], [7, 40], [7, 60]]) {
    const glob = pathological(stars);
    const name = "a".repeat(length);
    console.log(
      `${glob} against ${length} a's: regex ${timed(() => regexMatcher([glob])(name))}, ` +
        `globMatches ${timed(() => globMatches(glob, name))}`,
    );
  }
  const glob = pathological(11);
  for (const name of ["a".repeat(5000), `${"a".repeat(5000)}b`]) {
    console.log(
      `${glob} against ${name.length} characters: globMatches ${
        timed(() => globMatches(glob, name))
      } (regex: not run, it would not finish)`,
    );
  }
}
