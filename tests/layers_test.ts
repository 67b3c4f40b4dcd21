/**
 * The import graph keeps the layers the folders show (AGENTS.md): no import
 * circles among the relay's modules, each folder importing only the layers
 * below it, and scale-out (the Redis broker, go-ws's Redis bridge, the
 * worker mesh) imported only by the composition root (`relay.ts`) and the
 * entry points. The graph is the one Deno resolves (`deno info --json`),
 * type-only and dynamic imports included.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).href;

/** Where the graph starts: every entry point of the relay. */
const ENTRY_POINTS = [
  "main.ts",
  "mod.ts",
  "relay_worker.ts",
  "client/reconnecting_client.ts",
];

/**
 * The folders each folder may import besides itself. The root's modules
 * (entry points, composition root, start-up, the config) may import any;
 * of the root, the edge and scale import only `config.ts`, the settings
 * they are built from.
 */
const MAY_IMPORT: Record<string, string[]> = {
  engine: [],
  core: ["engine"],
  client: [],
  base: [],
  edge: ["core", "engine", "base", "config.ts"],
  // The worker mesh sums every worker's metrics, so scale reads the edge's registry.
  scale: ["core", "engine", "base", "edge", "config.ts"],
};

/** The folder a module lives in, or "" at the root. */
const folder = (module: string) => module.includes("/") ? module.slice(0, module.indexOf("/")) : "";

/** Module → the relay modules it imports, by path from the repository root. */
type Graph = Map<string, Set<string>>;

interface DenoInfo {
  modules: {
    specifier: string;
    dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[];
  }[];
}

async function importGraph(): Promise<Graph> {
  const graph: Graph = new Map();
  for (const entry of ENTRY_POINTS) {
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", entry],
      cwd: new URL(ROOT).pathname,
      env: { NO_COLOR: "1" },
    }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    const info: DenoInfo = JSON.parse(new TextDecoder().decode(stdout));
    for (const module of info.modules) {
      const from = local(module.specifier);
      if (from === undefined) continue;
      const edges = graph.get(from) ?? new Set();
      graph.set(from, edges);
      for (const dependency of module.dependencies ?? []) {
        for (const target of [dependency.code?.specifier, dependency.type?.specifier]) {
          const to = target === undefined ? undefined : local(target);
          if (to !== undefined) edges.add(to);
        }
      }
    }
  }
  return graph;
}

/** The path of one of the relay's own modules, or `undefined` for npm, node: and the rest. */
function local(specifier: string): string | undefined {
  return specifier.startsWith(ROOT) ? specifier.slice(ROOT.length) : undefined;
}

/** Every import circle in `graph`, each as the path that closes it. */
export function cycles(graph: Graph): string[][] {
  const found: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (module: string) => {
    state.set(module, "open");
    path.push(module);
    for (const next of graph.get(module) ?? []) {
      if (state.get(next) === "open") found.push([...path.slice(path.indexOf(next)), next]);
      else if (!state.has(next)) visit(next);
    }
    path.pop();
    state.set(module, "done");
  };
  for (const module of [...graph.keys()].sort()) if (!state.has(module)) visit(module);
  return found;
}

Deno.test("cycles() finds an import circle and passes a tree", () => {
  const tree: Graph = new Map([["a", new Set(["b", "c"])], ["b", new Set(["c"])]]);
  assert.deepEqual(cycles(tree), []);
  const circle: Graph = new Map([["a", new Set(["b"])], ["b", new Set(["c"])], [
    "c",
    new Set(["a"]),
  ]]);
  assert.deepEqual(cycles(circle), [["a", "b", "c", "a"]]);
});

Deno.test("the relay's modules import one another without circles", async () => {
  const graph = await importGraph();
  assert.ok(graph.has("relay.ts") && graph.has("edge/server.ts") && graph.has("core/hub.ts"));
  assert.deepEqual(cycles(graph).map((cycle) => cycle.join(" -> ")), []);
});

Deno.test("each folder imports only the layers below it; scale-out only the root imports", async () => {
  const graph = await importGraph();
  assert.ok(graph.has("edge/server.ts") && graph.has("scale/broker.ts"));
  const offending = [];
  for (const [from, imports] of graph) {
    const allowed = MAY_IMPORT[folder(from)];
    if (allowed === undefined) continue;
    for (const to of imports) {
      const target = folder(to) || to;
      if (!to.endsWith(".ts") || target === folder(from) || allowed.includes(target)) continue;
      offending.push(`${from} -> ${to}`);
    }
  }
  assert.deepEqual(offending, []);
});
