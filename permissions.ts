/**
 * The permission flags the relay runs with: network, reading the config and
 * TLS files, and the `RELAY_*` environment. Tests and the benchmark start
 * `main.ts` with exactly these, so a permission the relay lacks fails there
 * first. Keep the `run` task in `deno.json` in step.
 *
 * @module
 */

/** `deno run` flags for `main.ts`. */
export const RELAY_PERMISSIONS: readonly string[] = ["--allow-net", "--allow-read", "--allow-env"];
