"""A vendor API stand-in for the credential proxy's tests: HTTPS (or plain
HTTP with no certificate) on 127.0.0.1, speaking just enough of the OpenAI,
Anthropic and Slack APIs for their official SDKs, plus test routes.

It accepts a request only when the real key arrives where the vendor
expects it (Authorization: Bearer, x-api-key, or ?key=); it never sees the
placeholder. Test routes: /echo (the request's headers, path and query as
JSON, the key included: the proxy must mask it), /leak (the key in several
encodings), /sse?n=&pause= (server-sent events with pauses; writes
`closed` (the time) in the state folder as soon as the client goes away
mid-stream), /slow?delay= (answers after a delay; `closed` too),
/big?mib= (a streamed body), /redirect (302). Every request is appended
to `requests.log` in the state folder (method, path, whether the key was
right, the headers' names, the body's length as read and as declared). A
request whose body ends before its Content-Length (the client went away)
is logged, writes `closed` too, and is not answered.

usage: upstream.py STATE_DIR KEY_FILE [CERT KEY]
Writes the port to STATE_DIR/port once listening.
"""

import base64
import json
import os
import select
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

STATE = sys.argv[1]
KEY_FILE = sys.argv[2]


def current_key():
    """Read on each request: a test rotates the key by rewriting the file."""
    with open(KEY_FILE) as f:
        return f.read().strip()


def log(entry):
    with open(os.path.join(STATE, "requests.log"), "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, delayed
    # ACKs add 40 ms to every keep-alive request.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def key_ok(self, query):
        KEY = current_key()
        auth = self.headers.get("Authorization", "")
        return (
            auth == "Bearer " + KEY
            or self.headers.get("x-api-key") == KEY
            or query.get("key", [None])[0] == KEY
        )

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            try:
                return self.rfile.read(n)
            except OSError:
                return b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def send_json(self, status, obj, extra=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

    def chunk(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunked(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def pause_or_hangup(self, pause):
        """Wait `pause` seconds; True as soon as the client closes the
        connection meanwhile (so a test sees the hang-up when it happens,
        not at the next write)."""
        deadline = time.time() + pause
        while True:
            left = deadline - time.time()
            if left <= 0:
                return False
            readable, _, _ = select.select([self.connection], [], [], left)
            if not readable:
                return False
            try:
                if not self.connection.recv(1):
                    return True
            except ssl.SSLWantReadError:
                continue
            except (OSError, ssl.SSLError):
                return True

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")

    def route(self, method):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        body = self.body()
        ok = self.key_ok(query)
        KEY = current_key()
        log({"method": method, "path": url.path, "key_ok": ok,
             "headers": sorted(k.lower() for k in self.headers.keys()),
             "body_bytes": len(body), "length": self.headers.get("Content-Length")})
        if len(body) < int(self.headers.get("Content-Length") or 0):
            open(os.path.join(STATE, "closed"), "w").write("%f" % time.time())
            self.close_connection = True
            return
        path = url.path
        if path.endswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "https://elsewhere.invalid/landing")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not ok:
            return self.send_json(401, {"error": {"message": "invalid api key", "type": "auth"}})
        if path.endswith("/echo"):
            return self.send_json(200, {"method": method, "path": path, "query": url.query,
                                        "headers": {k.lower(): v for k, v in self.headers.items()},
                                        "body": body.decode("utf-8", "replace")},
                                  [("X-Echo-Key", KEY)])
        if path.endswith("/leak"):
            raw = KEY.encode()
            return self.send_json(200, {"plain": KEY, "b64": base64.b64encode(raw).decode(),
                                        "b64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
                                        "hex": raw.hex(), "json": json.dumps(KEY)})
        if path.endswith("/slow"):
            # The answer's head after `delay` seconds.
            if self.pause_or_hangup(float(query.get("delay", ["30"])[0])):
                open(os.path.join(STATE, "closed"), "w").write("%f" % time.time())
                return
            return self.send_json(200, {"slow": True})
        if path.endswith("/sse"):
            n = int(query.get("n", ["5"])[0])
            pause = float(query.get("pause", ["0.3"])[0])
            self.start_chunked("text/event-stream")
            try:
                for i in range(n):
                    self.chunk("data: {\"i\": %d, \"t\": %f}\n\n" % (i, time.time()))
                    if self.pause_or_hangup(pause):
                        raise ConnectionResetError("the client hung up")
                self.chunk("data: [DONE]\n\n")
                self.end_chunked()
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                open(os.path.join(STATE, "closed"), "w").write("%f" % time.time())
            return
        if path.endswith("/big"):
            mib = int(query.get("mib", ["1"])[0])
            block = (b"0123456789abcdef" * 4096)
            self.start_chunked("application/octet-stream")
            for _ in range(mib * 16):
                self.chunk(block)
            self.end_chunked()
            return
        if path.endswith("/chat/completions"):
            return self.openai_chat(json.loads(body or b"{}"))
        if path.endswith("/v1/messages"):
            return self.anthropic(json.loads(body or b"{}"))
        if path.endswith("/models"):
            return self.send_json(200, {"object": "list", "data": [
                {"id": "test-model", "object": "model", "created": 0, "owned_by": "test"}]})
        if "/chat.postMessage" in path or "/auth.test" in path:
            return self.send_json(200, {"ok": True, "channel": "C1", "ts": "1.0",
                                        "message": {"text": "hi"}, "user_id": "U1"})
        return self.send_json(404, {"error": "no such route"})

    def openai_chat(self, req):
        created = int(time.time())
        if req.get("stream"):
            self.start_chunked("text/event-stream")
            for i, word in enumerate(["Hello", " from", " upstream"]):
                delta = {"content": word} if i else {"role": "assistant", "content": word}
                ev = {"id": "c1", "object": "chat.completion.chunk", "created": created,
                      "model": req.get("model", "m"),
                      "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                self.chunk("data: " + json.dumps(ev) + "\n\n")
                time.sleep(0.05)
            ev = {"id": "c1", "object": "chat.completion.chunk", "created": created,
                  "model": req.get("model", "m"),
                  "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            self.chunk("data: " + json.dumps(ev) + "\n\n")
            self.chunk("data: [DONE]\n\n")
            self.end_chunked()
            return
        self.send_json(200, {
            "id": "c1", "object": "chat.completion", "created": created,
            "model": req.get("model", "m"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello from upstream"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}})

    def anthropic(self, req):
        msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": req.get("model", "m"),
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 1, "output_tokens": 0}}
        if req.get("stream"):
            self.start_chunked("text/event-stream")

            def ev(name, data):
                self.chunk("event: %s\ndata: %s\n\n" % (name, json.dumps(data)))
            ev("message_start", {"type": "message_start", "message": msg})
            ev("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}})
            for word in ["Hello", " from", " upstream"]:
                ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": word}})
                time.sleep(0.05)
            ev("content_block_stop", {"type": "content_block_stop", "index": 0})
            ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                 "stop_sequence": None}, "usage": {"output_tokens": 3}})
            ev("message_stop", {"type": "message_stop"})
            self.end_chunked()
            return
        msg["content"] = [{"type": "text", "text": "Hello from upstream"}]
        msg["stop_reason"] = "end_turn"
        self.send_json(200, msg)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
if len(sys.argv) > 4:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
tmp = os.path.join(STATE, "port.tmp")
open(tmp, "w").write(str(server.server_address[1]))
os.rename(tmp, os.path.join(STATE, "port"))
server.serve_forever()
