// keywarden's socket API from Node.js, with the standard library only.
//
// A program that keywarden starts (`keywarden run -- node app.js`) finds
// the sidecar's socket in KEYWARDEN_SOCKET and its token in KEYWARDEN_TOKEN:
//
//   const { Keywarden } = require("./keywarden_client");
//
//   const kw = new Keywarden();
//   const apiKey = await kw.get("openai");
//   // A narrower, shorter-lived token for a plug-in or a subprocess:
//   const plugin = await kw.mint(["skill:web"], 300);
//   // A Slack request, checked without the signing secret ever leaving
//   // keywarden (the X-Slack-Request-Timestamp and X-Slack-Signature
//   // headers, and the raw body exactly as received):
//   const { valid, reason } = await kw.verifySlack(timestamp, signature, rawBody);
//
// Every failure rejects with a KeywardenError carrying the HTTP status (0
// when no sidecar answers) and keywarden's one-line message, never a value.
//
// As a program, for a quick look: node keywarden_client.js get openai

"use strict";

const http = require("node:http");

class KeywardenError extends Error {
  constructor(status, message, challengeId) {
    super(status ? `keywarden: ${status}: ${message}` : `keywarden: ${message}`);
    this.name = "KeywardenError";
    this.status = status;
    // Set when the secret awaits a human's approval (202): the operator
    // answers with `keywarden approve CHALLENGE_ID`.
    this.challengeId = challengeId;
  }
}

class Keywarden {
  constructor({ socketPath, token, timeoutMs = 10000 } = {}) {
    this.socketPath = socketPath || process.env.KEYWARDEN_SOCKET;
    // Not enumerable: console.log(client) and JSON.stringify never show it.
    Object.defineProperty(this, "token", {
      value: token || process.env.KEYWARDEN_TOKEN,
      enumerable: false,
    });
    this.timeoutMs = timeoutMs;
    if (!this.socketPath || !this.token) {
      throw new KeywardenError(0, "KEYWARDEN_SOCKET and KEYWARDEN_TOKEN are not set: not started by `keywarden run`?");
    }
  }

  call(method, path, payload) {
    const body = payload === undefined ? undefined : JSON.stringify(payload);
    const headers = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      headers["Content-Length"] = Buffer.byteLength(body);
    }
    return new Promise((resolve, reject) => {
      const req = http.request(
        { socketPath: this.socketPath, method, path, headers, timeout: this.timeoutMs },
        (res) => {
          const chunks = [];
          res.on("data", (c) => chunks.push(c));
          res.on("end", () => {
            let answer = {};
            try {
              answer = JSON.parse(Buffer.concat(chunks).toString("utf8"));
            } catch {
              // not JSON: the status says enough
            }
            if (res.statusCode === 200) resolve(answer);
            else if (res.statusCode === 202) reject(new KeywardenError(202, "awaiting approval", answer.challenge_id));
            else reject(new KeywardenError(res.statusCode, answer.error || res.statusMessage));
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error("timed out")));
      req.on("error", (e) => reject(new KeywardenError(0, `${this.socketPath}: ${e.message}`)));
      req.end(body);
    });
  }

  // The value of one secret, as text.
  async get(id) {
    return (await this.call("GET", `/v1/secrets/${encodeURIComponent(id)}`)).value;
  }

  // Every secret a skill may use: {id: value}.
  async skillSecrets(skill) {
    return (await this.call("GET", `/v1/skills/${encodeURIComponent(skill)}/secrets`)).secrets;
  }

  // A client with a new token: never wider than this one's, never
  // longer-lived than the policy allows.
  async mint(scopes, ttlSeconds) {
    const answer = await this.call("POST", "/v1/tokens", { scopes, ttl_seconds: ttlSeconds });
    const narrow = new Keywarden({ socketPath: this.socketPath, token: answer.token, timeoutMs: this.timeoutMs });
    narrow.tokenId = answer.token_id;
    narrow.scopes = answer.scopes;
    narrow.expiresAt = answer.expires_at;
    return narrow;
  }

  // Slack's request signature (v0, HMAC-SHA256 of "v0:timestamp:body",
  // within 5 minutes), checked by keywarden with its signing secret.
  async verifySlack(timestamp, signature, body) {
    const answer = await this.call("POST", "/v1/slack/verify", {
      timestamp: String(timestamp),
      signature,
      body: Buffer.isBuffer(body) ? body.toString("utf8") : body,
    });
    return { valid: Boolean(answer.valid), reason: answer.reason ?? null };
  }
}

module.exports = { Keywarden, KeywardenError };

if (require.main === module) {
  const [command, id] = process.argv.slice(2);
  if (command !== "get" || !id) {
    console.error("usage: keywarden_client.js get ID");
    process.exit(64);
  }
  new Keywarden()
    .get(id)
    .then((value) => console.log(value))
    .catch((e) => {
      console.error(e.message);
      // As `keywarden get`: 77 refused, 65 no such secret, 69 no sidecar.
      process.exit([202, 401, 403, 410].includes(e.status) ? 77 : e.status === 404 ? 65 : 69);
    });
}
