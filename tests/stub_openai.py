"""A recording OpenAI-compatible chat server for tests: it answers like a model (SSE stream with
usage), remembers every request body, and obeys cues in the last user message:

    SLOW-START   wait (up to 30 s) before the first token: a long prefill or a restarting worker
    IMAGE <url>  answer with a Markdown image and an <img> tag pointing at <url>
    ECHO <text>  answer with <text> exactly, in eight pieces (hostile Markdown in a model's answer)
    FAIL         answer HTTP 500 with an OpenAI-style error (one request of many failing)
    LONG <n>     answer with n pieces (benchmarks: a stream that lasts)
    RAW <text>   send <text> verbatim as the only event (a server speaking broken JSON)

Everything else is answered as ``<model> heard: <question>`` in a few timed pieces (and `` (seed N)`` when
the request carries a seed).
It stands in for a model server only where a test must see exactly what the arena sent.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubOpenAI:
    def __init__(self, models: tuple[str, ...] = ("stub-a", "stub-b"), piece_delay: float = 0.15):
        self.models, self.piece_delay = models, piece_delay
        self.requests: list[dict] = []
        self.fetches: list[str] = []  # GETs of anything but /v1/models: what a browser fetched from us
        self.in_flight = self.most_in_flight = 0  # chat requests being answered at once, and the most seen
        # (tokenize(text) -> ids, prompt_logprobs(ids, k) -> vLLM's list) to act as a vLLM server that can score
        # a text (POST /tokenize and /v1/completions with prompt_logprobs); None: an ordinary chat server
        self.scoring = None
        self._count = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    return self._json({"object": "list", "data": [{"id": m, "object": "model"} for m in stub.models]})
                stub.fetches.append(self.path)
                self.send_response(404)
                self.end_headers()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if stub.scoring and self.path == "/tokenize":
                    tokens = stub.scoring[0](body["prompt"])
                    return self._json({"tokens": tokens, "count": len(tokens)})
                if stub.scoring and self.path == "/v1/completions" and body.get("prompt_logprobs"):
                    return self._json({"id": "stub", "object": "text_completion", "choices": [
                        {"index": 0, "text": "", "finish_reason": "length",
                         "prompt_logprobs": stub.scoring[1](body["prompt"], body["prompt_logprobs"])}]})
                if not self.path.endswith("/chat/completions"):  # no batch endpoint: an ordinary server
                    self.send_response(404)
                    self.end_headers()
                    return
                stub.requests.append(body)
                with stub._count:
                    stub.in_flight += 1
                    stub.most_in_flight = max(stub.most_in_flight, stub.in_flight)
                try:
                    self._answer(body)
                finally:
                    with stub._count:
                        stub.in_flight -= 1

            def _answer(self, body):
                if body["messages"][-1]["content"].startswith("FAIL"):
                    raw = json.dumps({"error": {"message": "the stub was told to fail", "type": "server_error"}})
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(raw.encode())
                    return
                if not body.get("stream", False):  # a whole completion (no logprobs: this server has none)
                    pieces = [p for p in stub.answer(body) if isinstance(p, dict)]
                    text = "".join(c["delta"].get("content") or "" for p in pieces for c in p["choices"])
                    usage = next((p["usage"] for p in pieces if "usage" in p), None)
                    return self._json({"id": "stub", "object": "chat.completion", "usage": usage, "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                try:
                    for piece in stub.answer(body):
                        raw = piece if isinstance(piece, str) else json.dumps(piece)
                        self.wfile.write(b"data: " + raw.encode() + b"\n\n")
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the arena stopped the answer

            def _json(self, data):
                raw = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # many sessions at once (benchmarks): the default backlog of 5 drops them

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, body: dict):
        question = body["messages"][-1]["content"]
        if "SLOW-START" in question:
            time.sleep(30)
        if question.startswith("RAW "):
            yield question[4:]
            return
        if question.startswith("LONG "):
            words = [f"w{i} " for i in range(int(question.split()[1]))]
        elif question.startswith("ECHO "):
            text = question[5:]
            step = max(1, -(-len(text) // 8))
            words = [text[i:i + step] for i in range(0, len(text), step)]
        elif question.startswith("IMAGE "):
            url = question.split()[1]
            words = [f"Look: ![tracker]({url}) ", f"and <img src=\"{url}\"> ", "done."]
        else:
            words = [f"{body['model']} ", "heard: ", question[:200]]
            if body.get("seed") is not None:  # a seeded request (Regenerate) says which seed it answered with
                words.append(f" (seed {body['seed']})")
        for word in words:
            time.sleep(self.piece_delay)
            yield {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        yield {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 10, "completion_tokens": len(words)}}

    def catalog(self) -> str:
        """models.yaml entries for every stub model (engine: openai)."""
        return "models:" + "".join(f"""
  - id: {m}
    name: "Stub {m[-1].upper()}"
    engine: openai
    endpoint: {{base_url: {self.base_url}, model: {m}, timeout_s: 60}}
    quantization: "none (a test server)"
    license: test
""" for m in self.models)

    def close(self) -> None:
        self.server.shutdown()
