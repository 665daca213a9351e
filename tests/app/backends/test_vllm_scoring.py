"""The vLLM backend's continuation scoring on CPU: with hf_scoring, A-LLMRec candidate and genre scores come
from a transformers copy of the LLM and equal the HF backend's; the genre sentence can come from a
`vllm serve` server (a stub here) fed the genre prompt's embeddings; without hf_scoring both are a
BackendError (the endpoints then degrade). The pooling engine is the transformers stand-in of test_vllm."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from app.backends.hf import HFBackend
from app.backends.vllm import PoolingEngine, VLLMBackend, continuation_scorer, prompt_encoder
from app.backends.vllm_client import CompletionClient
from app.bundle import ServingBundle, load_bundle, verify
from app.errors import BackendError
from models.prompts import USER_OUT
from tests.app.backends.test_vllm import TransformersLastPooling

HISTORIES = [[3, 6, 7, 9], [12, 15]]
CANDIDATES = [[1, 2, 4, 5, 8, 10], [20, 21, 22]]


class GenerateStub(BaseHTTPRequestHandler):
    """`vllm serve` /v1/completions: records the decoded prompt embeddings, answers a fixed sentence each."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        rows = [torch.load(io.BytesIO(base64.b64decode(p)), weights_only=True) for p in body["prompt_embeds"]]
        self.server.rows.extend(rows)  # type: ignore[attr-defined]
        choices = [{"index": i, "text": f" Drama, Comedy. More text {i}"} for i in range(len(rows))]
        data = json.dumps({"choices": choices}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub_server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), GenerateStub)
    httpd.rows = []  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def bundle(allmrec_bundle: Path) -> ServingBundle:
    return load_bundle(allmrec_bundle, verify(allmrec_bundle), "cpu")


def hybrid(
    bundle: ServingBundle, hf: HFBackend, client: CompletionClient | None = None, keep: bool = True
) -> VLLMBackend:
    """VLLMBackend as from_bundle builds it on a GPU, with the transformers stand-in for vLLM's engine."""
    encoder, hidden, llm = prompt_encoder(bundle, device="cpu", dtype="float32", llm_path=None, keep_llm=keep)
    pooling = TransformersLastPooling(hf.encoder.llm)
    engine = PoolingEngine(pooling, hidden, torch.float32, 4096)
    return VLLMBackend(encoder, engine, encoder.special[USER_OUT], continuation_scorer(bundle, llm, client))


def test_hf_scoring_gives_the_hf_backends_candidate_and_genre_scores(
    bundle: ServingBundle, allmrec_backend: HFBackend
) -> None:
    backend = hybrid(bundle, allmrec_backend)
    got = backend.rank_candidates(HISTORIES, CANDIDATES)
    want = allmrec_backend.rank_candidates(HISTORIES, CANDIDATES)
    assert [len(row) for row in got] == [6, 3]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    scores, texts = backend.explain_genres(HISTORIES)
    ref_scores, ref_texts = allmrec_backend.explain_genres(HISTORIES)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    assert texts == ref_texts and backend.health()
    np.testing.assert_allclose(  # the user vectors still come from the pooling engine
        backend.encode_users(HISTORIES, [None, None]),
        allmrec_backend.encode_users(HISTORIES, [None, None]),
        rtol=1e-4,
        atol=1e-5,
    )


def test_genre_sentence_from_a_vllm_server_fed_the_genre_prompt_embeddings(
    bundle: ServingBundle, allmrec_backend: HFBackend, stub_server: ThreadingHTTPServer
) -> None:
    host, port = stub_server.server_address[:2]
    client = CompletionClient(f"http://{host}:{port}", "smollm2", hidden=32, dtype=torch.float32)
    backend = hybrid(bundle, allmrec_backend, client)
    assert backend.scorer is not None and backend.scorer.explanation_tokens == 0  # served: no generation
    backend.scorer.explanation_tokens = 24  # the free-text path, kept for a generated answer
    scores, texts = backend.explain_genres(HISTORIES)
    ref_scores, _ = allmrec_backend.explain_genres(HISTORIES)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)  # scores stay in process
    genre = allmrec_backend.scorer.genre
    assert genre is not None
    assert texts == genre.sentences([" Drama, Comedy. More text 0", " Drama, Comedy. More text 1"])
    assert texts[0].startswith("The movie genres this user") and "More text" not in texts[0]
    sent = stub_server.rows  # type: ignore[attr-defined]
    with torch.no_grad():
        expected = genre.prompt_embeds(HISTORIES)
    assert len(sent) == 2
    for row, ref in zip(sent, expected, strict=True):
        torch.testing.assert_close(row, ref.float())


def test_without_hf_scoring_both_are_backend_errors(
    bundle: ServingBundle, allmrec_backend: HFBackend
) -> None:
    backend = hybrid(bundle, allmrec_backend, keep=False)
    with pytest.raises(BackendError, match="LLMREC_VLLM_HF_SCORING=true"):
        backend.rank_candidates(HISTORIES, CANDIDATES)
    with pytest.raises(BackendError, match="LLMREC_VLLM_HF_SCORING=true"):
        backend.explain_genres([[1]])
    assert backend.health()  # the bundle/backend cannot: not a sick engine


def test_a_scoring_failure_marks_the_backend_unhealthy_until_a_success(
    bundle: ServingBundle, allmrec_backend: HFBackend
) -> None:
    backend = hybrid(bundle, allmrec_backend)
    assert backend.scorer is not None and backend.scorer.allmrec is not None
    encoder = backend.scorer.allmrec
    real = encoder.candidate_rows

    def broken(*args: Any) -> Any:
        raise RuntimeError("gpu fell over")

    encoder.candidate_rows = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="gpu fell over"):
        backend.rank_candidates(HISTORIES, CANDIDATES)
    assert not backend.health()
    encoder.candidate_rows = real  # type: ignore[method-assign]
    backend.rank_candidates(HISTORIES, CANDIDATES)
    assert backend.health()
