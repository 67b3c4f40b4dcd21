import assert from "node:assert/strict";
import { exportSPKI, generateKeyPair, SignJWT } from "jose";
import { nextEvent, nextJson, scrape, startTestRelay, TestClient } from "./helpers.ts";
import type { Relay } from "../relay.ts";
import { RelayStartError } from "../relay.ts";

const SECRET = "test-secret-of-enough-length-for-hs256";

/** An HS256 token; `iat` is now unless `claims` sets it (`undefined` leaves it out). */
async function hs256(
  claims: Record<string, unknown>,
  expiresIn?: string | number,
): Promise<string> {
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: "HS256" });
  if (!("iat" in claims)) jwt.setIssuedAt();
  if (expiresIn !== undefined) jwt.setExpirationTime(expiresIn);
  return await jwt.sign(new TextEncoder().encode(SECRET));
}

/** Seconds since the epoch, `offset` seconds from now, as JWT claims count time. */
function inSeconds(offset: number): number {
  return Math.floor(Date.now() / 1000) + offset;
}

/** An upgrade attempt's answer: 101 or the refusal, with its headers and body. */
async function upgrade(
  relay: Relay,
  path: string,
  headers: HeadersInit = {},
): Promise<{ status: number; headers: Headers; body: string }> {
  const url = new URL(path, relay.url.replace(/^ws/, "http"));
  const response = await fetch(url, {
    headers: {
      connection: "Upgrade",
      upgrade: "websocket",
      "sec-websocket-version": "13",
      "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      ...headers,
    },
  });
  let body = "";
  if (response.status === 101) await response.body?.cancel();
  else body = await response.text();
  return { status: response.status, headers: response.headers, body };
}

/** The status of an upgrade attempt: 101 or the refusal's. */
async function upgradeStatus(
  relay: Relay,
  path: string,
  headers: HeadersInit = {},
): Promise<number> {
  return (await upgrade(relay, path, headers)).status;
}

Deno.test("auth api_key: header, token query and subprotocol are accepted; others get 401", async () => {
  await using relay = await startTestRelay({ auth: { mode: "api_key", api_keys: ["k1", "k2"] } });
  assert.equal(await upgradeStatus(relay, "/", { authorization: "Bearer k2" }), 101);
  assert.equal(await upgradeStatus(relay, "/?token=k1"), 101);
  const viaProtocol = await TestClient.connect(relay, "/", ["relay", "bearer.k1"]);
  assert.equal(viaProtocol.socket.protocol, "relay", "the server picks the non-token entry");
  assert.equal(await upgradeStatus(relay, "/"), 401);
  assert.equal(await upgradeStatus(relay, "/?token=nope"), 401);
  assert.equal(await upgradeStatus(relay, "/", { authorization: "Bearer k1x" }), 401);
  await assert.rejects(TestClient.open(relay.url, ["relay", "bearer.wrong"]));
  const samples = await scrape(relay);
  assert.equal(samples.get('websocket_rejected_connections_total{reason="auth_missing"}'), 1);
  assert.equal(samples.get('websocket_rejected_connections_total{reason="auth_invalid"}'), 3);
  await viaProtocol.close();
});

Deno.test("auth jwt HS256: valid, expired at connect, wrong signature, garbage", async () => {
  await using relay = await startTestRelay({
    auth: { mode: "jwt", jwt: { ...jwtDefaults(), secret: SECRET } },
  });
  assert.equal(await upgradeStatus(relay, `/?token=${await hs256({ sub: "u" }, "1h")}`), 101);
  assert.equal(
    await upgradeStatus(relay, `/?token=${await hs256({}, Math.floor(Date.now() / 1000) - 60)}`),
    401,
  );
  const forged = await new SignJWT({}).setProtectedHeader({ alg: "HS256" })
    .sign(new TextEncoder().encode("another-secret-another-secret-12"));
  assert.equal(await upgradeStatus(relay, `/?token=${forged}`), 401);
  assert.equal(await upgradeStatus(relay, "/?token=not.a.jwt"), 401);
  const samples = await scrape(relay);
  assert.equal(samples.get('websocket_rejected_connections_total{reason="auth_expired"}'), 1);
  assert.equal(samples.get('websocket_rejected_connections_total{reason="auth_invalid"}'), 2);
});

Deno.test("auth jwt ES256 with a public key file accepts its tokens and refuses HS256 ones", async () => {
  const { publicKey, privateKey } = await generateKeyPair("ES256");
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/key.pem`, await exportSPKI(publicKey));
    await using relay = await startTestRelay({
      auth: {
        mode: "jwt",
        jwt: { ...jwtDefaults(), algorithm: "ES256", public_key_file: `${dir}/key.pem` },
      },
    });
    const token = await new SignJWT({}).setProtectedHeader({ alg: "ES256" }).setExpirationTime("1h")
      .sign(privateKey);
    assert.equal(await upgradeStatus(relay, "/", { authorization: `Bearer ${token}` }), 101);
    assert.equal(
      await upgradeStatus(relay, "/", { authorization: `Bearer ${await hs256({})}` }),
      401,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("auth jwt: an unreadable public key file fails the start with its name", async () => {
  await assert.rejects(
    startTestRelay({
      auth: {
        mode: "jwt",
        jwt: { ...jwtDefaults(), algorithm: "RS256", public_key_file: "/nonexistent/key.pem" },
      },
    }),
    (error: Error) =>
      error instanceof RelayStartError && /\/nonexistent\/key.pem/.test(error.message),
  );
});

Deno.test("auth jwt: a client whose token expires while connected is closed with 4001", async () => {
  await using relay = await startTestRelay({
    auth: { mode: "jwt", jwt: { ...jwtDefaults(), secret: SECRET, leeway: "0" } },
  });
  // Expiry is in whole seconds: the token ends at the next second boundary or the one after.
  const exp = Math.floor(Date.now() / 1000) + 1;
  const client = await TestClient.connect(relay, `/?token=${await hs256({}, exp)}`);
  const closed = await client.closed;
  assert.equal(closed.code, 4001);
  assert.equal(closed.reason, "token expired");
  const samples = await scrape(relay);
  assert.equal(samples.get('websocket_disconnections_total{reason="token_expired"}'), 1);
});

Deno.test("auth jwt: the channels claim limits subscribe and publish", async () => {
  await using relay = await startTestRelay({
    websocket: { protocol: "json" },
    auth: { mode: "jwt", jwt: { ...jwtDefaults(), secret: SECRET } },
  });
  const token = await hs256({ channels: ["process:*", "runs.?"] }, "1h");
  const client = await TestClient.connect(relay, `/?token=${token}`);
  const ask = async (command: unknown) => {
    client.send(JSON.stringify(command));
    return (await nextJson(client));
  };
  assert.equal((await ask({ type: "subscribe", channel: "process:proc-1" })).type, "subscribed");
  assert.equal((await ask({ type: "subscribe", channel: "runs.7" })).type, "subscribed");
  const denied = await ask({ type: "subscribe", channel: "runs.17", id: 1 });
  assert.deepEqual([denied.code, denied.id], ["forbidden", 1]);
  assert.equal((await ask({ type: "publish", channel: "admin", data: 1 })).code, "forbidden");
  const bad = await hs256({ channels: "process:*" }, "1h");
  assert.equal(await upgradeStatus(relay, `/?token=${bad}`), 401);
  await client.close();
});

function jwtDefaults() {
  return {
    algorithm: "HS256" as const,
    secret: "",
    public_key_file: "",
    issuer: "",
    audience: "",
    require_exp: true,
    leeway: "30s",
  };
}

Deno.test("auth jwt: a channels claim built to make a regex backtrack is answered at once", async () => {
  await using relay = await startTestRelay({
    websocket: { protocol: "json" },
    auth: { mode: "jwt", jwt: { ...jwtDefaults(), secret: SECRET } },
  });
  const token = await hs256({ channels: ["*a*a*a*a*a*a*a*a*a*a*b"] }, "1h");
  const client = await TestClient.connect(relay, `/?token=${token}`);
  const ask = async (command: unknown) => {
    client.send(JSON.stringify(command));
    return (await nextJson(client));
  };
  // The longest channel name: the regex this replaced would still be backtracking.
  assert.equal((await ask({ type: "subscribe", channel: "a".repeat(256) })).code, "forbidden");
  const allowed = await ask({ type: "subscribe", channel: `${"a".repeat(255)}b` });
  assert.equal(allowed.type, "subscribed");
  await client.close();
});

Deno.test("auth jwt policy: exp required unless require_exp is false; leeway on exp, nbf and iat; each refusal says why", async () => {
  const jwt = { ...jwtDefaults(), secret: SECRET };
  {
    await using relay = await startTestRelay({ auth: { mode: "jwt", jwt } });
    const cases: [string, number, RegExp?][] = [
      [
        await hs256({}),
        401,
        /^Unauthorized: invalid token: no exp claim \(auth.jwt.require_exp is true\)$/,
      ],
      // Within the 30s leeway, either way of the relay's clock.
      [await hs256({}, inSeconds(-10)), 101],
      [await hs256({ nbf: inSeconds(10) }, "1h"), 101],
      [await hs256({ iat: inSeconds(10) }, "1h"), 101],
      // Beyond it.
      [await hs256({}, inSeconds(-60)), 401, /^Unauthorized: token expired$/],
      [
        await hs256({ nbf: inSeconds(120) }, "1h"),
        401,
        /^Unauthorized: token not valid yet: nbf is more than auth.jwt.leeway \(30s\) in the future$/,
      ],
      [
        await hs256({ iat: inSeconds(120) }, "1h"),
        401,
        /^Unauthorized: invalid token: issued in the future \(iat is more than auth.jwt.leeway, 30s, ahead\)$/,
      ],
    ];
    for (const [token, status, message] of cases) {
      const answer = await upgrade(relay, "/", { authorization: `Bearer ${token}` });
      assert.equal(answer.status, status, answer.body);
      if (message) assert.match(answer.body.trim(), message);
    }
    const samples = await scrape(relay);
    assert.equal(samples.get('websocket_rejected_connections_total{reason="auth_invalid"}'), 3);
    assert.equal(samples.get('websocket_rejected_connections_total{reason="auth_expired"}'), 1);
  }
  {
    await using relay = await startTestRelay({
      auth: { mode: "jwt", jwt: { ...jwt, require_exp: false, leeway: "0" } },
    });
    assert.equal(await upgradeStatus(relay, `/?token=${await hs256({})}`), 101);
    assert.equal(await upgradeStatus(relay, `/?token=${await hs256({}, inSeconds(-10))}`), 401);
    assert.equal(await upgradeStatus(relay, `/?token=${await hs256({ nbf: inSeconds(10) })}`), 401);
    assert.equal(await upgradeStatus(relay, `/?token=${await hs256({ iat: inSeconds(10) })}`), 401);
  }
});

Deno.test("a bearer.<token> subprotocol alone is refused with 400 in every auth mode, and no token is in any response header", async () => {
  const token = await hs256({}, "1h");
  const modes = [
    { mode: "none" as const },
    { mode: "api_key" as const, api_keys: [token] },
    { mode: "jwt" as const, jwt: { ...jwtDefaults(), secret: SECRET } },
  ];
  for (const auth of modes) {
    await using relay = await startTestRelay({ auth });
    const refused = await upgrade(relay, "/", { "sec-websocket-protocol": `bearer.${token}` });
    assert.equal(refused.status, 400, auth.mode);
    assert.equal(
      refused.body,
      "Bad Request: offer a subprotocol besides bearer.<token>, e.g. relay: the answer names the subprotocol it picks, and must not name a token\n",
    );
    // Any case of the prefix: the relay does not know what else such an entry carries.
    const upper = await upgrade(relay, "/", { "sec-websocket-protocol": `Bearer.${token}` });
    assert.equal(upper.status, 400, auth.mode);
    const answers = [
      refused,
      upper,
      await upgrade(relay, "/", { "sec-websocket-protocol": `bearer.${token}, relay` }),
      await upgrade(relay, "/", { "sec-websocket-protocol": `relay, bearer.${token}` }),
      await upgrade(relay, "/", { authorization: `Bearer ${token}` }),
      await upgrade(relay, `/?token=${token}`),
      await upgrade(relay, "/", { "sec-websocket-protocol": "bearer.wrong, relay" }),
    ];
    for (const answer of answers) {
      for (const [name, value] of answer.headers) {
        assert.ok(!value.includes(token), `${auth.mode}: ${name}: ${value}`);
        assert.ok(!/bearer\./i.test(value), `${auth.mode}: ${name}: ${value}`);
      }
    }
    assert.equal(answers[2].status, 101, auth.mode);
    assert.equal(answers[2].headers.get("sec-websocket-protocol"), "relay");
    assert.equal(answers[3].headers.get("sec-websocket-protocol"), "relay");
    const samples = await scrape(relay);
    assert.equal(samples.get('websocket_rejected_connections_total{reason="subprotocol"}'), 2);
  }
});

Deno.test("rate limit in raw mode closes with 1008; in json mode drops with an error envelope", async () => {
  const limit = { messages_per_second: 0.001, burst: 2 };
  {
    await using relay = await startTestRelay({ websocket: { rate_limit: limit } });
    const [client, observer] = await Promise.all([1, 2].map(() => TestClient.connect(relay)));
    for (let i = 0; i < 3; i++) client.send(`m${i}`);
    assert.equal((await client.closed).code, 1008);
    // The first two were relayed; the third was not.
    relay.hub.broadcast("after");
    assert.deepEqual([await observer.next(), await observer.next()], ["m0", "m1"]);
    assert.equal(await observer.next(), "after");
    await observer.close();
    const samples = await scrape(relay);
    assert.equal(samples.get('websocket_disconnections_total{reason="rate_limited"}'), 1);
  }
  {
    await using relay = await startTestRelay({
      websocket: { protocol: "json", rate_limit: limit },
    });
    const client = await TestClient.connect(relay);
    for (let i = 0; i < 3; i++) client.send(JSON.stringify({ type: "ping", id: i }));
    assert.deepEqual(await nextJson(client), { type: "pong", id: 0 });
    assert.deepEqual(await nextJson(client), { type: "pong", id: 1 });
    const error = await nextJson(client);
    assert.equal(error.code, "rate_limited");
    assert.equal(client.socket.readyState, WebSocket.OPEN);
    const samples = await scrape(relay);
    assert.equal(samples.get('websocket_protocol_errors_total{code="rate_limited"}'), 1);
    const gone = nextEvent(relay.hub, "disconnect");
    await client.close();
    await gone;
  }
});
