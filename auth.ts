/**
 * Who may connect and publish: the `auth` section checked on every upgrade
 * (`none`, `api_key`, or `jwt` through `jose`) and on every publish API
 * request (`auth.publish_keys`). A token is taken from `Authorization:
 * Bearer`, the `token` query parameter, or a `bearer.<token>` entry of
 * `Sec-WebSocket-Protocol` (browsers cannot set headers on a WebSocket).
 * Nothing of a token is ever logged or echoed in an error.
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { errors, importSPKI, jwtVerify, type JWTVerifyOptions } from "jose";
import type { Config } from "./config.ts";

/** Why an upgrade was refused by auth; counted as a rejection reason. */
export type AuthFailure = "auth_missing" | "auth_invalid" | "auth_expired";

/** What a client may do once connected. */
export interface Grant {
  /** When the token stops being valid, ms since the epoch; the client is closed then. */
  expiresAt?: number;
  /** Channels it may subscribe and publish to; `undefined`: all. */
  channels?: ChannelPatterns;
  /** The `Sec-WebSocket-Protocol` to answer with, when the client offered any. */
  protocol?: string;
}

/** The outcome of {@link Authenticator.check}. */
export type AuthResult =
  | { ok: true; grant: Grant }
  | { ok: false; reason: AuthFailure; message: string };

/**
 * What auth reads of a request: its URL and headers. A `Request` is one; the
 * engine's upgrade path passes a lighter view of the `node:http` request.
 */
export interface RequestHead {
  readonly url: string;
  readonly headers: { get(name: string): string | null };
}

/** The subprotocol entry prefix that carries a token. */
export const BEARER_PROTOCOL_PREFIX = "bearer.";

/**
 * Glob patterns (`*` any run, `?` one character) a channel name must match
 * one of. The patterns come from a token's `channels` claim, so whoever
 * holds a token chooses them: they are matched by {@link globMatches}, whose
 * time is bounded by the product of the lengths, never by a regular
 * expression built from the claim (`*a*a*a*a*a*a*b` made V8's backtracking
 * take seconds per frame).
 */
export class ChannelPatterns {
  readonly #globs: readonly string[];

  constructor(globs: readonly string[]) {
    // An empty claim allows only "", as the regular expression it replaces
    // did (an empty alternation); no channel name is empty, so: nothing.
    this.#globs = globs.length === 0 ? [""] : [...globs];
  }

  /** Whether `channel` matches one of the patterns. */
  allows(channel: string): boolean {
    for (const glob of this.#globs) if (globMatches(glob, channel)) return true;
    return false;
  }
}

/**
 * Whether all of `text` matches `glob`: `*` is any run of characters, `?`
 * exactly one, anything else itself. Neither wildcard crosses a line
 * terminator (`\n`, `\r`, U+2028, U+2029), which is what the `.` of the
 * regular expressions this replaces did. Characters are UTF-16 code units.
 *
 * Two pointers; on a mismatch only the last `*` seen takes one more
 * character and the rest of the glob is tried again from there. Letting an
 * earlier `*` take more can never help (the part between it and the last
 * `*` is fixed and would only start later), so the work is at most
 * `text.length` retries of at most `glob.length` steps each.
 */
export function globMatches(glob: string, text: string): boolean {
  let g = 0;
  let t = 0;
  /** Index in `glob` of the last `*` seen, -1 before any. */
  let star = -1;
  /** Where in `text` the run of that `*` ends so far. */
  let starEnd = 0;
  while (t < text.length) {
    const p = g < glob.length ? glob.charCodeAt(g) : -1;
    if (p === STAR) {
      star = g++;
      starEnd = t;
    } else if (p === QUESTION ? !isLineTerminator(text.charCodeAt(t)) : p === text.charCodeAt(t)) {
      g++;
      t++;
    } else if (star >= 0 && !isLineTerminator(text.charCodeAt(starEnd))) {
      g = star + 1;
      t = ++starEnd;
    } else {
      return false;
    }
  }
  while (g < glob.length && glob.charCodeAt(g) === STAR) g++;
  return g === glob.length;
}

const STAR = 0x2a;
const QUESTION = 0x3f;

function isLineTerminator(code: number): boolean {
  return code === 0x0a || code === 0x0d || code === 0x2028 || code === 0x2029;
}

/** Checks upgrades and publish requests against the `auth` config. */
export class Authenticator {
  readonly #config: Config["auth"];
  readonly #apiKeys: Buffer[];
  readonly #publishKeys: Buffer[];
  readonly #jwtKey: CryptoKey | Uint8Array | undefined;

  private constructor(config: Config["auth"], jwtKey: CryptoKey | Uint8Array | undefined) {
    this.#config = config;
    this.#apiKeys = config.api_keys.map(digest);
    this.#publishKeys = config.publish_keys.map(digest);
    this.#jwtKey = jwtKey;
  }

  /** Reads the JWT key if one is configured; throws with the file and the reason. */
  static async create(config: Config["auth"]): Promise<Authenticator> {
    if (config.mode !== "jwt") return new Authenticator(config, undefined);
    const { algorithm, secret, public_key_file: file } = config.jwt;
    if (algorithm === "HS256") return new Authenticator(config, new TextEncoder().encode(secret));
    let pem;
    try {
      pem = await Deno.readTextFile(file);
    } catch (error) {
      throw new Error(`Cannot read JWT public key file ${file}: ${(error as Error).message}`);
    }
    try {
      return new Authenticator(config, await importSPKI(pem, algorithm));
    } catch (error) {
      throw new Error(
        `Cannot use JWT public key file ${file} for ${algorithm}: ${(error as Error).message}`,
      );
    }
  }

  /** Whether the publish API is on at all (any publish key configured). */
  get publishEnabled(): boolean {
    return this.#publishKeys.length > 0;
  }

  /** Checks an upgrade request; the grant says what the client may do. */
  async check(request: RequestHead): Promise<AuthResult> {
    const offered = offeredProtocols(request);
    const protocol = offered.find((p) => !p.startsWith(BEARER_PROTOCOL_PREFIX)) ?? offered[0];
    const mode = this.#config.mode;
    if (mode === "none") return { ok: true, grant: { protocol } };
    const token = bearerToken(request, offered);
    if (token === undefined) {
      return {
        ok: false,
        reason: "auth_missing",
        message: "no token: send Authorization: Bearer, ?token=, or a bearer.<token> subprotocol",
      };
    }
    if (mode === "api_key") {
      return oneOf(token, this.#apiKeys)
        ? { ok: true, grant: { protocol } }
        : { ok: false, reason: "auth_invalid", message: "unknown API key" };
    }
    return await this.#verifyJwt(token, protocol);
  }

  /** Whether a publish API request carries one of `auth.publish_keys`. */
  mayPublish(request: RequestHead): boolean {
    const token = bearerToken(request, []);
    return token !== undefined && oneOf(token, this.#publishKeys);
  }

  async #verifyJwt(token: string, protocol: string | undefined): Promise<AuthResult> {
    const { algorithm, issuer, audience } = this.#config.jwt;
    const options: JWTVerifyOptions = { algorithms: [algorithm] };
    if (issuer !== "") options.issuer = issuer;
    if (audience !== "") options.audience = audience;
    let payload;
    try {
      ({ payload } = await jwtVerify(token, this.#jwtKey!, options));
    } catch (error) {
      if (error instanceof errors.JWTExpired) {
        return { ok: false, reason: "auth_expired", message: "token expired" };
      }
      // jose's messages name the failed check (signature, claim), never the token.
      return { ok: false, reason: "auth_invalid", message: `invalid token: ${errorText(error)}` };
    }
    const { channels, exp } = payload;
    if (
      channels !== undefined &&
      (!Array.isArray(channels) || !channels.every((c) => typeof c === "string"))
    ) {
      return {
        ok: false,
        reason: "auth_invalid",
        message: "invalid token: channels claim must be a list of patterns",
      };
    }
    return {
      ok: true,
      grant: {
        protocol,
        expiresAt: exp === undefined ? undefined : exp * 1000,
        channels: channels === undefined ? undefined : new ChannelPatterns(channels),
      },
    };
  }
}

function offeredProtocols(request: RequestHead): string[] {
  const header = request.headers.get("sec-websocket-protocol");
  return header === null ? [] : header.split(",").map((p) => p.trim()).filter((p) => p !== "");
}

function bearerToken(request: RequestHead, offered: string[]): string | undefined {
  const header = request.headers.get("authorization");
  const match = header?.match(/^Bearer\s+(\S+)\s*$/i);
  if (match) return match[1];
  const query = new URL(request.url).searchParams.get("token");
  if (query) return query;
  const entry = offered.find((p) => p.startsWith(BEARER_PROTOCOL_PREFIX));
  return entry?.slice(BEARER_PROTOCOL_PREFIX.length) || undefined;
}

/** Compares digests, so the comparison takes the same time whatever the key. */
function oneOf(token: string, keys: Buffer[]): boolean {
  const candidate = digest(token);
  let found = false;
  for (const key of keys) found = timingSafeEqual(candidate, key) || found;
  return found;
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
