"""keywarden's socket API from Python, with the standard library only.

A program that keywarden starts (`keywarden run -- python3 app.py`) finds
the sidecar's socket in KEYWARDEN_SOCKET and its token in KEYWARDEN_TOKEN:

    from keywarden_client import Keywarden

    kw = Keywarden()
    api_key = kw.get("openai")
    # A narrower, shorter-lived token for a plug-in or a subprocess:
    plugin = kw.mint(["skill:web"], ttl_seconds=300)
    # A Slack request, checked without the signing secret ever leaving
    # keywarden (the X-Slack-Request-Timestamp and X-Slack-Signature
    # headers, and the raw body exactly as received):
    verdict = kw.verify_slack(timestamp, signature, raw_body)
    if not verdict.valid:
        print("rejected:", verdict.reason)

Every failure raises KeywardenError with the HTTP status (0 when no
sidecar answers) and keywarden's one-line message, never a value.

As a program, for a quick look: python3 keywarden_client.py get openai
"""

import http.client
import json
import os
import socket
import sys
import urllib.parse
from collections import namedtuple

__all__ = ["Keywarden", "KeywardenError", "SlackVerdict"]

SlackVerdict = namedtuple("SlackVerdict", ["valid", "reason"])


class KeywardenError(Exception):
    """A call that failed: `status` is the HTTP status, 0 for no sidecar."""

    def __init__(self, status, message, challenge_id=None):
        super().__init__(f"keywarden: {status}: {message}" if status else f"keywarden: {message}")
        self.status = status
        self.message = message
        # Set when the secret awaits a human's approval (202): the operator
        # answers with `keywarden approve CHALLENGE_ID`.
        self.challenge_id = challenge_id


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket: http.client with another connect()."""

    def __init__(self, socket_path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class Keywarden:
    """A client of one sidecar, with one token."""

    def __init__(self, socket_path=None, token=None, timeout=10.0):
        self.socket_path = socket_path or os.environ.get("KEYWARDEN_SOCKET")
        self._token = token or os.environ.get("KEYWARDEN_TOKEN")
        self.timeout = timeout
        if not self.socket_path or not self._token:
            raise KeywardenError(0, "KEYWARDEN_SOCKET and KEYWARDEN_TOKEN are not set: not started by `keywarden run`?")
        # Set on clients made by mint().
        self.token_id = None
        self.scopes = None
        self.expires_at = None

    def __repr__(self):
        # Never the token.
        return f"Keywarden(socket_path={self.socket_path!r}, token_id={self.token_id!r})"

    def _call(self, method, path, payload=None):
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Authorization": "Bearer " + self._token}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn = _UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as e:
            raise KeywardenError(0, f"{self.socket_path}: {e.strerror or e}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {}
        if resp.status == 202:
            raise KeywardenError(202, "awaiting approval", answer.get("challenge_id"))
        if resp.status != 200:
            raise KeywardenError(resp.status, answer.get("error") or resp.reason)
        return answer

    def get(self, secret_id):
        """The value of one secret, as text."""
        path = "/v1/secrets/" + urllib.parse.quote(secret_id, safe="")
        return self._call("GET", path)["value"]

    def skill_secrets(self, skill):
        """Every secret a skill may use: {id: value}."""
        path = "/v1/skills/" + urllib.parse.quote(skill, safe="") + "/secrets"
        return self._call("GET", path)["secrets"]

    def mint(self, scopes, ttl_seconds):
        """A client with a new token: never wider than this one's, never
        longer-lived than the policy allows."""
        answer = self._call("POST", "/v1/tokens", {"scopes": list(scopes), "ttl_seconds": int(ttl_seconds)})
        narrow = Keywarden(self.socket_path, answer["token"], self.timeout)
        narrow.token_id = answer.get("token_id")
        narrow.scopes = answer.get("scopes")
        narrow.expires_at = answer.get("expires_at")
        return narrow

    def verify_slack(self, timestamp, signature, body):
        """Slack's request signature (v0, HMAC-SHA256 of "v0:timestamp:body",
        within 5 minutes), checked by keywarden with its signing secret."""
        if isinstance(body, bytes):
            body = body.decode("utf-8")
        answer = self._call("POST", "/v1/slack/verify", {"timestamp": str(timestamp), "signature": signature, "body": body})
        return SlackVerdict(bool(answer.get("valid")), answer.get("reason"))


def main(argv):
    if len(argv) != 3 or argv[1] != "get":
        print("usage: keywarden_client.py get ID", file=sys.stderr)
        return 64
    try:
        print(Keywarden().get(argv[2]))
    except KeywardenError as e:
        print(e, file=sys.stderr)
        # As `keywarden get`: 77 refused, 65 no such secret, 69 no sidecar.
        return 77 if e.status in (202, 401, 403, 410) else 65 if e.status == 404 else 69
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
