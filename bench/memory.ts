/**
 * A relay child's memory, as the bounded memory scripts (`slowloris.ts`,
 * `non_readers.ts`) report it: RSS from `/proc`, the V8 heap from the
 * relay's own metrics, and one way to round them.
 *
 * @module
 */
import { statusKiB } from "./loadgen.ts";

/** Reads the memory of the relay process `pid`, whose metrics listen on `metricsPort`. */
export class MemoryProbe {
  constructor(readonly pid: number, readonly metricsPort: number) {}

  /** Resident memory now, MiB. */
  rssMiB(): number {
    return statusKiB(this.pid, "VmRSS") / 1024;
  }

  /** The most resident memory the process has had, MiB. */
  peakRssMiB(): number {
    return statusKiB(this.pid, "VmHWM") / 1024;
  }

  /** The relay's metrics exposition. */
  async scrape(): Promise<string> {
    return await (await fetch(`http://127.0.0.1:${this.metricsPort}/metrics`)).text();
  }

  /** V8 heap in use, MiB (`nodejs_heap_size_used_bytes`). */
  async heapMiB(): Promise<number> {
    return sample(await this.scrape(), "nodejs_heap_size_used_bytes") / 2 ** 20;
  }
}

/** The value of the series `name` (a regular expression source) in an exposition; NaN if absent. */
export function sample(metrics: string, name: string): number {
  return Number(metrics.match(new RegExp(`^${name} (\\S+)`, "m"))?.[1] ?? NaN);
}

/** `value` to one decimal, for reports. */
export function round1(value: number): number {
  return Number(value.toFixed(1));
}
