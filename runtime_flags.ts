/**
 * The Deno flags the relay runs with: network, reading the config and TLS
 * files, the `RELAY_*` environment, and `--unstable-net` for `reusePort`
 * (`server.workers`). Tests and the benchmark start `main.ts` with exactly
 * these, so a permission the relay lacks fails there first. Keep the `run`
 * task in `deno.json` in step.
 *
 * @module
 */

/** `deno run` flags for `main.ts`. */
export const RELAY_RUNTIME_FLAGS: readonly string[] = [
  "--allow-net",
  "--allow-read",
  "--allow-env",
  "--unstable-net",
];
