/**
 * The relay's version, taken from `deno.json` so there is one place to bump
 * it and `deno compile` embeds it with the code.
 *
 * @module
 */
import denoConfig from "../deno.json" with { type: "json" };

/** The version `--version` prints and `relay_build_info` reports. */
export const VERSION: string = denoConfig.version;
