/**
 * The import graph keeps the layers of `/work/shared/DESIGN.md`: no import
 * circles among the relay's modules, and scale-out (the Redis broker,
 * go-ws's Redis bridge, the worker mesh) imported only by the composition
 * root (`relay.ts`) and the entry points. The graph is the one Deno
 * resolves (`deno info --json`), type-only and dynamic imports included.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).href;

/** Where the graph starts: every entry point of the relay. */
const ENTRY_POINTS = ["main.ts", "mod.ts", "relay_worker.ts", "reconnecting_client.ts"];

/** Scale-out: loaded by the composition root, never by the edge or the core. */
const SCALE = new Set(["broker.ts", "gows_bridge.ts", "cluster.ts", "relay_worker.ts"]);

/** The modules that may import scale-out: the root, the entry points, and scale itself. */
const MAY_IMPORT_SCALE = new Set(["relay.ts", "main.ts", "mod.ts", ...SCALE]);

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
  assert.ok(graph.has("relay.ts") && graph.has("server.ts") && graph.has("hub.ts"));
  assert.deepEqual(cycles(graph).map((cycle) => cycle.join(" -> ")), []);
});

Deno.test("only the composition root and the entry points import scale-out", async () => {
  const graph = await importGraph();
  const offending = [];
  for (const [from, imports] of graph) {
    if (MAY_IMPORT_SCALE.has(from)) continue;
    for (const to of imports) if (SCALE.has(to)) offending.push(`${from} -> ${to}`);
  }
  assert.deepEqual(offending, []);
});
