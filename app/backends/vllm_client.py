"""Generation (explanations) from `vllm serve MODEL --enable-prompt-embeds` over HTTP: the OpenAI-compatible
completions API with `prompt_embeds`. Stdlib HTTP only; never imports vllm (the server is another process)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from app.backends.prompt_embeds import encode_prompt_embeds, validate_prompt_embeds
from app.errors import BackendError


class CompletionClient:
    """Generation (explanations) from `vllm serve MODEL --enable-prompt-embeds` over its OpenAI-compatible
    completions API: `prompt_embeds` = base64 of torch.save per prompt, no text prompt, greedy by default.
    Blocking; call it off the event loop. Transport or server errors raise BackendError."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        hidden: int,
        dtype: torch.dtype,
        timeout_s: float = 30.0,
        api_key: str | None = None,
    ) -> None:
        self.base_url, self.model = base_url.rstrip("/"), model
        self.hidden, self.dtype, self.timeout_s, self.api_key = hidden, dtype, timeout_s, api_key

    def complete(
        self, embeds: Sequence[Tensor], *, max_tokens: int = 64, temperature: float = 0.0
    ) -> list[str]:
        """One generated text per prompt, in the order given."""
        rows = validate_prompt_embeds(embeds, hidden=self.hidden, dtype=self.dtype)
        body = {
            "model": self.model,
            "prompt_embeds": [encode_prompt_embeds(row) for row in rows],
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        answer = self._request("/v1/completions", body)
        try:
            choices = sorted(answer["choices"], key=lambda c: int(c["index"]))
            texts = [str(c["text"]) for c in choices]
        except (KeyError, TypeError, ValueError) as err:
            raise BackendError(f"vLLM server {self.base_url}: malformed completions answer: {err!r}") from err
        if len(texts) != len(rows):
            raise BackendError(f"vLLM server {self.base_url}: {len(texts)} choices for {len(rows)} prompts")
        return texts

    def health(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=self.timeout_s) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def _request(self, path: str, body: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            f"{self.base_url}{path}", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            detail = err.read()[:300].decode("utf-8", "replace")
            if err.code == 404:  # vLLM's answer to a model name it does not serve
                detail += f" (sent {self.model!r}; LLMREC_VLLM_GENERATE_MODEL must be a --served-model-name)"
            raise BackendError(f"vLLM server {self.base_url}{path} answered {err.code}: {detail}") from err
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as err:
            raise BackendError(f"vLLM server {self.base_url}{path} unreachable or garbled: {err!r}") from err
