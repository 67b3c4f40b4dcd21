/**
 * Who may connect and publish: the `auth` section checked on every upgrade
 * (`none`, `api_key`, or `jwt` through `jose`) and on every publish API
 * request (`auth.publish_keys`). On an upgrade a token is taken from
 * `Authorization: Bearer`, the `token` query parameter, or a `bearer.<token>`
 * entry of `Sec-WebSocket-Protocol` (browsers cannot set headers on a
 * WebSocket); a publish key from `Authorization: Bearer` only. Nothing of a
 * token is ever logged, echoed in an error, or chosen as the subprotocol the
 * answer names: a client that offers only `bearer.<token>` is refused (400).
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { errors, importSPKI, jwtVerify, type JWTVerifyOptions } from "jose";
import { type Config, durationMs } from "../config.ts";
import { ChannelPatterns } from "../core/protocol.ts";

/** Why an upgrade was refused by auth; counted as a rejection reason. */
export type AuthFailure = "auth_missing" | "auth_invalid" | "auth_expired" | "subprotocol";

/** What a client may do once connected. */
export interface Grant {
  /** When the token stops being valid, ms since the epoch; the client is closed then. */
  expiresAt?: number;
  /** Channels it may subscribe and publish to; `undefined`: all. */
  channels?: ChannelPatterns;
  /** The `Sec-WebSocket-Protocol` to answer with, when the client offered any; never a token. */
  protocol?: string;
}

/**
 * The outcome of {@link Authenticator.check}: a grant, or the HTTP status
 * of the refusal (400 for a request no token could fix, 401) and why.
 */
export type AuthResult =
  | { ok: true; grant: Grant }
  | { ok: false; status: 400 | 401; reason: AuthFailure; message: string };

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
 * The answer to a client whose only subprotocols carry tokens. The relay
 * must answer an offer with one of its entries (browsers fail the
 * connection otherwise) and must not answer with a token: the response
 * header would put it in every proxy's log.
 */
const BEARER_ONLY_MESSAGE =
  "offer a subprotocol besides bearer.<token>, e.g. relay: the answer names the subprotocol it picks, and must not name a token";

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
      throw new Error(`Cannot read JWT public key file ${file}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    try {
      return new Authenticator(config, await importSPKI(pem, algorithm));
    } catch (error) {
      throw new Error(
        `Cannot use JWT public key file ${file} for ${algorithm}: ${(error as Error).message}`,
        { cause: error },
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
    const protocol = offered.find((p) => !isBearerEntry(p));
    if (offered.length > 0 && protocol === undefined) {
      return { ok: false, status: 400, reason: "subprotocol", message: BEARER_ONLY_MESSAGE };
    }
    const mode = this.#config.mode;
    if (mode === "none") return { ok: true, grant: { protocol } };
    const token = headerToken(request) || queryToken(request) ||
      offered.find(isBearerEntry)?.slice(BEARER_PROTOCOL_PREFIX.length);
    if (!token) {
      return unauthorized(
        "auth_missing",
        "no token: send Authorization: Bearer, ?token=, or a bearer.<token> subprotocol",
      );
    }
    if (mode === "api_key") {
      return oneOf(token, this.#apiKeys)
        ? { ok: true, grant: { protocol } }
        : unauthorized("auth_invalid", "unknown API key");
    }
    return await this.#verifyJwt(token, protocol);
  }

  /**
   * Why a publish API request may not publish, or `undefined` when it
   * carries one of `auth.publish_keys` in its `Authorization` header. A key
   * in the URL is refused even beside a good header: URLs are logged by
   * proxies and servers, so the key must not be taught to travel there.
   */
  publishRefusal(request: RequestHead): string | undefined {
    if (queryToken(request) !== undefined) {
      return "send the publish key in the Authorization header (Authorization: Bearer <key>), not in the URL";
    }
    const token = headerToken(request);
    return token !== undefined && oneOf(token, this.#publishKeys)
      ? undefined
      : "send one of auth.publish_keys as Authorization: Bearer <key>";
  }

  async #verifyJwt(token: string, protocol: string | undefined): Promise<AuthResult> {
    const { algorithm, issuer, audience, require_exp, leeway } = this.#config.jwt;
    const leewaySeconds = durationMs(leeway) / 1000;
    // jose applies clockTolerance to exp and nbf; iat is checked below.
    const options: JWTVerifyOptions = { algorithms: [algorithm], clockTolerance: leewaySeconds };
    if (issuer !== "") options.issuer = issuer;
    if (audience !== "") options.audience = audience;
    if (require_exp) options.requiredClaims = ["exp"];
    let payload;
    try {
      ({ payload } = await jwtVerify(token, this.#jwtKey!, options));
    } catch (error) {
      if (error instanceof errors.JWTExpired) return unauthorized("auth_expired", "token expired");
      if (error instanceof errors.JWTClaimValidationFailed) {
        if (error.claim === "exp" && error.reason === "missing") {
          return unauthorized(
            "auth_invalid",
            "invalid token: no exp claim (auth.jwt.require_exp is true)",
          );
        }
        if (error.claim === "nbf" && error.reason === "check_failed") {
          return unauthorized(
            "auth_invalid",
            `token not valid yet: nbf is more than auth.jwt.leeway (${leeway}) in the future`,
          );
        }
      }
      // jose's messages name the failed check (signature, claim), never the token.
      return unauthorized("auth_invalid", `invalid token: ${errorText(error)}`);
    }
    const { channels, exp, iat } = payload;
    // jose has checked that iat, when present, is a number.
    if (iat !== undefined && iat > Date.now() / 1000 + leewaySeconds) {
      return unauthorized(
        "auth_invalid",
        `invalid token: issued in the future (iat is more than auth.jwt.leeway, ${leeway}, ahead)`,
      );
    }
    if (
      channels !== undefined &&
      (!Array.isArray(channels) || !channels.every((c) => typeof c === "string"))
    ) {
      return unauthorized(
        "auth_invalid",
        "invalid token: channels claim must be a list of patterns",
      );
    }
    return {
      ok: true,
      grant: {
        protocol,
        // Accepted up to the leeway past exp at connect, so kept as long once connected.
        expiresAt: exp === undefined ? undefined : (exp + leewaySeconds) * 1000,
        channels: channels === undefined ? undefined : new ChannelPatterns(channels),
      },
    };
  }
}

function unauthorized(reason: AuthFailure, message: string): AuthResult {
  return { ok: false, status: 401, reason, message };
}

function offeredProtocols(request: RequestHead): string[] {
  const header = request.headers.get("sec-websocket-protocol");
  return header === null ? [] : header.split(",").map((p) => p.trim()).filter((p) => p !== "");
}

/**
 * Whether a subprotocol entry carries a token. Any case: an entry such as
 * `Bearer.<token>` is no token to the relay, but it may be one to whoever
 * sent it, so it is never the entry answered with either.
 */
function isBearerEntry(entry: string): boolean {
  return entry.slice(0, BEARER_PROTOCOL_PREFIX.length).toLowerCase() === BEARER_PROTOCOL_PREFIX;
}

function headerToken(request: RequestHead): string | undefined {
  return request.headers.get("authorization")?.match(/^Bearer\s+(\S+)\s*$/i)?.[1];
}

/** The `token` query parameter, when present (even empty: it is still a key sent in a URL). */
function queryToken(request: RequestHead): string | undefined {
  return new URL(request.url).searchParams.get("token") ?? undefined;
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
