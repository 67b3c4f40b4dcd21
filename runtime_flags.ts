/**
 * The Deno flags the relay runs with: network, reading the config and TLS
 * files, the `RELAY_*` environment, `--unstable-net` for `reusePort`
 * (`server.workers`), and a young generation of at most 8 MiB per
 * semi-space. Tests and the benchmark start `main.ts` with exactly these,
 * so a permission the relay lacks fails there first. Keep the `run` task
 * in `deno.json` in step.
 *
 * The semi-space cap is measured (docs/performance.md): V8's default lets
 * the young generation grow to tens of MiB of garbage, which at 10,000
 * idle connections was 4 KiB of RSS each (11.3 KiB per connection; 7.8
 * KiB with the cap) and 50 MiB more peak RSS under fan-out, with no
 * measurable difference in CPU per delivery either way.
 *
 * @module
 */

/** `deno run` flags for `main.ts`. */
export const RELAY_RUNTIME_FLAGS: readonly string[] = [
  "--allow-net",
  "--allow-read",
  "--allow-env",
  "--unstable-net",
  "--v8-flags=--max-semi-space-size=8",
];
