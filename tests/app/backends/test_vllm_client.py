"""The generation client against a local HTTP server that checks requests the way `vllm serve
--enable-prompt-embeds` reads them (the model name against its served names, JSON body, base64 torch.save
tensors, loaded with weights_only) and answers in the completions format; once started with the very flags
docker-compose.yml gives the vllm service. It tests our client's wire format, not vLLM's model."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import torch

from app.backends.prompt_embeds import PromptEmbedsError
from app.backends.vllm_client import CompletionClient
from app.errors import BackendError
from app.settings import VLLM_SERVED_MODEL_NAME, Settings
from tests.deploy.parsing import ROOT, interpolate, read_compose, served_model_names

H = 16


class StubVLLM(BaseHTTPRequestHandler):
    """Records each request; answers 404 to a model name it does not serve (as vLLM's _check_model: an empty
    name means the default model), else one choice per prompt (in reverse index order) describing what it
    decoded, or the status/body set on the server."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, dict(self.headers), body))  # type: ignore[attr-defined]
        if self.server.fail is not None:  # type: ignore[attr-defined]
            return self._send(*self.server.fail)  # type: ignore[attr-defined]
        if body.get("model") and body["model"] not in self.server.served:  # type: ignore[attr-defined]
            message = f"The model `{body['model']}` does not exist."
            return self._send(404, {"error": {"message": message, "type": "NotFoundError", "code": 404}})
        if self.path != "/v1/completions" or "prompt" in body:
            return self._send(400, {"error": {"message": f"unexpected {self.path} {sorted(body)}"}})
        choices = []
        for index, payload in enumerate(body["prompt_embeds"]):
            tensor = torch.load(io.BytesIO(base64.b64decode(payload, validate=True)), weights_only=True)
            assert isinstance(tensor, torch.Tensor) and tensor.dim() == 2 and tensor.shape[1] == H
            choices.append(
                {"index": index, "text": f"{tuple(tensor.shape)} {tensor.dtype} {float(tensor.sum()):.3f}"}
            )
        return self._send(200, {"object": "text_completion", "choices": choices[::-1]})

    def do_GET(self) -> None:
        self._send(200 if self.path == "/health" else 404, {})

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), StubVLLM)
    httpd.requests, httpd.fail, httpd.served = [], None, ["smollm2"]  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def client_for(httpd: ThreadingHTTPServer, **kwargs: Any) -> CompletionClient:
    host, port = httpd.server_address[:2]
    return CompletionClient(f"http://{host}:{port}/", "smollm2", hidden=H, dtype=torch.bfloat16, **kwargs)


def embeds(*lengths: int) -> list[torch.Tensor]:
    return [torch.full((t, H), 0.5 * t, dtype=torch.bfloat16) for t in lengths]


def test_completion_request_carries_decodable_prompt_embeds(server: ThreadingHTTPServer) -> None:
    texts = client_for(server, api_key="secret-key").complete(embeds(3, 7), max_tokens=12)
    assert texts == ["(3, 16) torch.bfloat16 72.000", "(7, 16) torch.bfloat16 392.000"]  # in prompt order
    path, headers, body = server.requests[0]  # type: ignore[attr-defined]
    assert path == "/v1/completions" and headers["Authorization"] == "Bearer secret-key"
    assert body["model"] == "smollm2" and body["max_tokens"] == 12 and body["temperature"] == 0.0


def test_invalid_embeddings_are_refused_before_any_request(server: ThreadingHTTPServer) -> None:
    bad = embeds(4)[0].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(PromptEmbedsError, match="NaN"):
        client_for(server).complete([bad])
    with pytest.raises(PromptEmbedsError, match=r"dtype torch\.float32"):
        client_for(server).complete([torch.zeros(2, H)])
    assert server.requests == []  # type: ignore[attr-defined]


def test_server_errors_become_backend_errors_with_the_servers_message(server: ThreadingHTTPServer) -> None:
    server.fail = (400, {"error": {"message": "You must set `--enable-prompt-embeds`"}})  # type: ignore[attr-defined]
    with pytest.raises(BackendError, match=r"answered 400: .*--enable-prompt-embeds"):
        client_for(server).complete(embeds(2))
    server.fail = (200, {"choices": [{"index": 0}]})  # type: ignore[attr-defined]
    with pytest.raises(BackendError, match="malformed completions answer"):
        client_for(server).complete(embeds(2))
    server.fail = (200, {"choices": []})  # type: ignore[attr-defined]
    with pytest.raises(BackendError, match="0 choices for 1 prompts"):
        client_for(server).complete(embeds(2))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_a_backend_error_and_unhealthy(server: ThreadingHTTPServer) -> None:
    assert client_for(server).health()
    down = CompletionClient(
        f"http://127.0.0.1:{free_port()}", "m", hidden=H, dtype=torch.bfloat16, timeout_s=2
    )
    assert not down.health()
    with pytest.raises(BackendError, match="unreachable"):
        down.complete(embeds(2))


def compose_vllm_args(env: dict[str, str]) -> list[str]:
    """`vllm serve` arguments of docker-compose.yml's vllm service, resolved with `env` as shell and .env."""
    return [interpolate(str(arg), env) for arg in read_compose()["services"]["vllm"]["command"]]


@pytest.mark.parametrize("env", [{}, {"LLMREC_VLLM_GENERATE_MODEL": "movie-llm"}], ids=["default", "renamed"])
def test_the_api_reaches_the_vllm_service_as_compose_starts_it(
    server: ThreadingHTTPServer, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server.served = served_model_names(compose_vllm_args(env))  # type: ignore[attr-defined]
    monkeypatch.delenv("LLMREC_VLLM_GENERATE_MODEL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    model = Settings(bundle=ROOT).vllm.generate_model  # what app.main hands the vllm backend's client
    host, port = server.server_address[:2]
    client = CompletionClient(f"http://{host}:{port}", model, hidden=H, dtype=torch.bfloat16)
    assert client.complete(embeds(3)) == ["(3, 16) torch.bfloat16 72.000"]
    sent = server.requests[-1][2]["model"]  # type: ignore[attr-defined]
    assert sent == env.get("LLMREC_VLLM_GENERATE_MODEL", VLLM_SERVED_MODEL_NAME)


def test_a_model_name_the_server_does_not_serve_is_a_404_naming_the_setting(
    server: ThreadingHTTPServer,
) -> None:
    server.served = served_model_names(compose_vllm_args({}))  # type: ignore[attr-defined]
    host, port = server.server_address[:2]
    location = CompletionClient(f"http://{host}:{port}", "/bundle/llm", hidden=H, dtype=torch.bfloat16)
    with pytest.raises(BackendError, match=r"answered 404: .*does not exist.*LLMREC_VLLM_GENERATE_MODEL"):
        location.complete(embeds(2))  # the bundle's LLM location, what the client used to send
