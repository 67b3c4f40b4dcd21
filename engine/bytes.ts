/**
 * Joining byte arrays, for the engine's parser (fragments into a message)
 * and connections (queued frames into one write).
 *
 * @module
 */

/** One fresh array holding `parts` in order; `bytes` is their total length. */
export function concat(parts: readonly Uint8Array[], bytes: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(bytes);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
