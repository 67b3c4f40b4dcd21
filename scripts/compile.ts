/**
 * `deno task compile` builds `dist/relay` for this host; `deno task release`
 * cross-compiles `dist/relay-linux-x86_64` and `dist/relay-darwin-aarch64`
 * and writes `dist/SHA256SUMS`. Both bake in exactly the runtime flags in
 * `runtime_flags.ts` (the ones the tests run `main.ts` with), and embed the
 * worker module and the example page that `server.workers` and
 * `server.serve_example` load at run time. The version comes from
 * `deno.json` through `version.ts`, so `relay --version` prints it.
 *
 * `deno compile` downloads its runtime (`denort`) the first time; set
 * `DENORT_BIN` to a local copy where the download host is unreachable.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { RELAY_RUNTIME_FLAGS } from "../runtime_flags.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Release binaries by file name, with their `--target`. */
export const RELEASE_TARGETS: Readonly<Record<string, string>> = {
  "relay-linux-x86_64": "x86_64-unknown-linux-gnu",
  "relay-darwin-aarch64": "aarch64-apple-darwin",
};

/** Files loaded at run time rather than imported, so `deno compile` must be told of them. */
export const EMBEDDED_FILES: readonly string[] = [
  "relay_worker.ts",
  "example/index.html",
  "example/reconnecting_client.js",
];

/** The `deno compile` arguments for one binary. */
export function compileArgs(output: string, target?: string): string[] {
  return [
    "compile",
    ...RELAY_RUNTIME_FLAGS,
    ...EMBEDDED_FILES.flatMap((file) => ["--include", file]),
    ...(target === undefined ? [] : ["--target", target]),
    "--output",
    output,
    "main.ts",
  ];
}

async function compile(output: string, target?: string): Promise<void> {
  const { success } = await new Deno.Command(Deno.execPath(), {
    args: compileArgs(output, target),
    cwd: ROOT,
  }).spawn().status;
  if (!success) throw new Error(`deno compile failed for ${output}`);
}

async function sha256(path: string): Promise<string> {
  return createHash("sha256").update(await Deno.readFile(path)).digest("hex");
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { release: { type: "boolean" } } });
  await Deno.mkdir(`${ROOT}dist`, { recursive: true });
  if (!values.release) {
    await compile("dist/relay");
  } else {
    const sums = [];
    for (const [name, target] of Object.entries(RELEASE_TARGETS)) {
      await compile(`dist/${name}`, target);
      sums.push(`${await sha256(`${ROOT}dist/${name}`)}  ${name}\n`);
    }
    await Deno.writeTextFile(`${ROOT}dist/SHA256SUMS`, sums.join(""));
    console.log(`dist/SHA256SUMS:\n${sums.join("")}`);
  }
}
