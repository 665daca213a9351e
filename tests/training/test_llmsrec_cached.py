"""llmrec's cached LLM-SRec recipe on a toy catalog with a tiny random Llama and a real (random) SASRec:
prefixes, negatives, the cache against the serving path, head training, the checkpoint and the hybrid."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from models.hybrid import HybridConfig
from models.llmsrec import LLMSRecEncoder, LossWeights
from models.prompts import PromptConfig, template_version
from tests.models.tiny_llm import one_torch_thread, tiny_llm
from tests.training.test_llmsrec_train import N_ITEMS, patch_loaders, toy_data, toy_teacher
from training.common.errors import CheckpointError, ConfigError
from training.data.dataset import PreparedData
from training.llmsrec.cache import item_hidden_states, prefix_ranks, user_hidden_states
from training.llmsrec.cached import build_cache
from training.llmsrec.checkpoint import load_llmsrec
from training.llmsrec.config import LLMSRecTrainConfig, check_config
from training.llmsrec.heads import catalogue_loss, catalogue_mask, score_distill_loss
from training.llmsrec.hybrid import ValidationSet, fit_hybrid
from training.llmsrec.item_table import compute_item_table
from training.llmsrec.scorer import build_encoder, load_llmsrec_scorer
from training.llmsrec.train import new_heads, train_llmsrec


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> PreparedData:
    return toy_data(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def teacher():
    return toy_teacher()


@pytest.fixture()
def patched(monkeypatch, teacher):
    patch_loaders(monkeypatch, teacher)


def cached_config(**kw) -> LLMSRecTrainConfig:
    base = {
        "recipe": "cached",
        "device": "cpu",
        "progress": False,
        "prefixes_per_user": 3,
        "head_epochs": 6,
        "head_patience": 6,
        "head_batch_size": 8,
        "cache_batch_size": 4,
    }
    return LLMSRecTrainConfig(**(base | kw))


def make_encoder(data, teacher, template: str = "paper") -> LLMSRecEncoder:
    llm = tiny_llm(seed=0)
    heads = new_heads(data, teacher, llm, seed=0)
    prompt = PromptConfig("watched", "movie", 10, 24, template_version(template))
    return build_encoder(llm, heads, data, prompt)


def test_prefixes_walk_back_from_the_end_of_the_train_split_rank_by_rank(data) -> None:
    ranks = prefix_ranks(data, per_user=3, stride=2, max_users=0, seed=0)
    expected: list[list[tuple[list[int], int, frozenset[int]]]] = [[], [], []]
    for seq in data.sequences:
        train = seq[:-2]
        for rank, j in enumerate(range(len(train) - 1, 0, -2)[:3]):
            # the whole train split is `seen`; valid / test items never appear
            expected[rank].append((train[:j].tolist(), int(train[j]), frozenset(train.tolist())))
    found = [[(e.history.tolist(), e.target, e.seen) for e in rank] for rank in ranks]
    assert found == [r for r in expected if r]
    # more ranks extend the fewer ones: the cache of a 1-prefix run is rank 0 of a 3-prefix run
    first = prefix_ranks(data, per_user=1, stride=2, max_users=0, seed=0)
    assert [(e.history.tolist(), e.target) for e in first[0]] == [
        (e.history.tolist(), e.target) for e in ranks[0]
    ]
    with pytest.raises(ConfigError, match="prefixes-per-user"):
        prefix_ranks(data, per_user=0, stride=1, max_users=0, seed=0)


def test_score_distillation_is_on_by_default_and_off_for_llm_only() -> None:
    assert cached_config().score_distill_weight() == 1.0  # ours, the measured best: the default
    assert cached_config(w_score_distill=0.5).score_distill_weight() == 0.5
    assert cached_config(variant="llm-only").score_distill_weight() == 0.0  # learns without SASRec
    check_config(cached_config(variant="llm-only"))  # the default weight is no error for llm-only
    with pytest.raises(ConfigError, match="w-score-distill"):
        check_config(cached_config(w_score_distill=-1.0))


def test_catalogue_negatives_never_include_the_users_own_items() -> None:
    seen = [frozenset({1, 2, 5}), frozenset({3}), frozenset()]
    targets = torch.tensor([2, 4, 6])
    mask = catalogue_mask(seen, targets, n_items=6)  # columns = items 1..6
    assert mask.tolist() == [
        [True, False, False, False, True, False],  # 1 and 5 (own history) excluded, 2 (target) kept
        [False, False, True, False, False, False],  # 3 excluded, target 4 kept even though unseen
        [False] * 6,
    ]
    users, items = torch.randn(3, 4), torch.randn(6, 4)
    logits = users @ items.T
    expected = torch.stack(
        [torch.logsumexp(logits[b][~mask[b]], 0) - logits[b, t - 1] for b, t in enumerate(targets.tolist())]
    ).mean()
    torch.testing.assert_close(catalogue_loss(users, items, targets, mask), expected)


def test_score_distillation_is_the_kl_to_sasrecs_ranking_over_unmasked_items() -> None:
    torch.manual_seed(0)
    users, items = torch.randn(3, 4), torch.randn(6, 4)
    mask = catalogue_mask([frozenset({1, 2}), frozenset(), frozenset({6})], torch.tensor([3, 1, 2]), 6)
    same = score_distill_loss(users, items, users, items, mask)
    torch.testing.assert_close(same, torch.tensor(0.0), atol=1e-6, rtol=0)  # student = teacher
    cf_users, cf_items = torch.randn(3, 2), torch.randn(6, 2)
    got = score_distill_loss(users, items, cf_users, cf_items, mask)
    expected = []
    for b in range(3):
        keep = ~mask[b]
        p = torch.softmax((cf_users[b] @ cf_items.T)[keep], 0)
        q = torch.log_softmax((users[b] @ items.T)[keep], 0)
        expected.append((p * (p.log() - q)).sum())
    torch.testing.assert_close(got, torch.stack(expected).mean())
    # a masked (own history) item's teacher score does not matter
    moved = cf_items.clone()
    moved[0] += 100.0  # item 1, masked in every row below
    mask2 = mask.clone()
    mask2[:, 0] = True
    base = score_distill_loss(users, items, cf_users, cf_items, mask2)
    torch.testing.assert_close(score_distill_loss(users, items, cf_users, moved, mask2), base)


def test_score_distillation_temperature_softens_both_sides_and_scales_by_its_square() -> None:
    torch.manual_seed(1)
    users, items = torch.randn(2, 4), torch.randn(5, 4)
    cf_users, cf_items = torch.randn(2, 3), torch.randn(5, 3)
    mask = catalogue_mask([frozenset({2}), frozenset()], torch.tensor([1, 4]), 5)
    t = 3.0
    got = score_distill_loss(users, items, cf_users, cf_items, mask, temperature=t)
    plain = score_distill_loss(users / t, items, cf_users / t, cf_items, mask)  # logits / t, no scaling
    torch.testing.assert_close(got, plain * t * t)
    assert not torch.allclose(got, score_distill_loss(users, items, cf_users, cf_items, mask))


@pytest.mark.parametrize("template", ["paper", "short"])
def test_cached_states_are_the_serving_paths_states(data, teacher, template, tmp_path) -> None:
    """Batched, length-sorted, padded and stored on disk: the heads see what serving computes for the same
    history one at a time (tolerance 1e-5 for padding / batch-order rounding)."""
    enc = make_encoder(data, teacher, template)
    histories = [s[:-2] for s in data.sequences]
    stamps = [None if t is None else t[:-2] for t in data.timestamps]
    cached = user_hidden_states(enc, "valid", histories, stamps, tmp_path, batch_size=3, progress=False)
    again = user_hidden_states(enc, "valid", histories, stamps, tmp_path, batch_size=3, progress=False)
    torch.testing.assert_close(again, cached, rtol=0, atol=0)  # read back from the chunk files
    with torch.no_grad():
        served = torch.cat([enc.user_vectors([h], [t]) for h, t in zip(histories, stamps, strict=True)])
        from_cache = enc.heads.user_vector(cached)
    torch.testing.assert_close(from_cache, served, rtol=1e-5, atol=1e-5)
    items = item_hidden_states(enc, N_ITEMS, None, batch_size=16, progress=False)
    with torch.no_grad():
        table = enc.heads.item_vector(items[1:]).numpy()
    np.testing.assert_allclose(table, compute_item_table(enc, N_ITEMS, 64, False)[1:], atol=1e-5)


def test_more_prefixes_per_user_compute_only_the_new_ranks(data, teacher, tmp_path) -> None:
    """The training-prefix cache is kept per prefix rank: a 3-prefix run after a 2-prefix run runs the LLM
    on rank 2's prompts only, and its states for ranks 0-1 are the ones the first run stored."""
    enc = make_encoder(data, teacher, "short")
    computed: list[int] = []
    user_hidden = enc.user_hidden

    def counting(histories, timestamps=None):
        computed.append(len(histories))
        return user_hidden(histories, timestamps)

    enc.user_hidden = counting  # type: ignore[method-assign]
    first = build_cache(enc, teacher, data, cached_config(prefixes_per_user=2), tmp_path)
    ranks = prefix_ranks(data, per_user=3, stride=1, max_users=0, seed=0)
    assert sum(computed) == len(ranks[0]) + len(ranks[1]) + len(first.valid.users)
    computed.clear()
    more = build_cache(enc, teacher, data, cached_config(prefixes_per_user=3), tmp_path)
    assert sum(computed) == len(ranks[2])  # the validation prompts are read back too
    n = len(first.targets)
    torch.testing.assert_close(more.users[:n], first.users, rtol=0, atol=0)
    assert more.targets.tolist() == [e.target for rank in ranks for e in rank]
    assert more.teacher is not None and len(more.teacher) == len(more.targets)


def test_short_template_drops_dates_and_numbers_and_is_shorter(data, teacher) -> None:
    paper, short = make_encoder(data, teacher, "paper"), make_encoder(data, teacher, "short")
    history, stamps = data.sequences[0][:-2], data.timestamps[0][:-2]
    long_text, short_text = (
        paper.user_prompts([history], [stamps])[0],
        short.user_prompts([history], [stamps])[0],
    )
    assert "Item No.1" in long_text and "Time:" in long_text
    assert "Item No." not in short_text and "Time:" not in short_text
    assert short_text.endswith("[UserOut]") and short_text.count("[HistoryEmb]") == len(history)
    assert len(short_text) < len(long_text)


def test_cached_recipe_writes_a_servable_checkpoint_with_its_hybrid(data, patched, tmp_path) -> None:
    out = tmp_path / "ckpt"
    result = train_llmsrec(data, tmp_path / "sasrec", cached_config(), out)
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["recipe"] == "cached" and result["recipe"] == "cached"
    assert config["valid"]["protocol"] == "1+99" and config["valid"]["n_users"] == data.n_users
    hybrid = HybridConfig.from_dict(config["hybrid"])
    assert config["hybrid"]["valid"]["ndcg@10"] >= max(config["hybrid"]["valid"]["grid"].values()) - 1e-12
    assert 0.0 <= hybrid.weight <= 1.0
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert max(h["valid"]["ndcg@10"] for h in history) == pytest.approx(config["valid"]["ndcg@10"])
    assert (out / "training_curve.png").is_file()
    # The stored table is pred_item over cached states; the serving encoder recomputes it from the LLM.
    scorer = load_llmsrec_scorer(out, data, expect_variant="llmsrec")
    recomputed = compute_item_table(scorer.encoder, N_ITEMS, 64, False)
    np.testing.assert_allclose(recomputed, load_llmsrec(out).item_table, atol=1e-5)
    # the llm-only variant reuses the same cache (input side is the same seed) and trains no CF head
    train_llmsrec(data, tmp_path / "sasrec", cached_config(variant="llm-only"), tmp_path / "only")
    only = json.loads((tmp_path / "only" / "config.json").read_text())
    assert only["variant"] == "llm-only"
    assert len(list((out / "cache").iterdir())) == 2  # items + one prompt folder: nothing recomputed


def test_hybrid_weight_is_chosen_on_validation_only(data, patched, tmp_path) -> None:
    """Replacing every user's test item changes nothing the recipe sees: same weight, same grid."""
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    train_llmsrec(data, tmp_path, cached_config(), out_a)
    valid = ValidationSet.load(data, 10_000, 0)  # stored by the run: the same file serves the second run
    row = {int(u): r for r, u in enumerate(valid.users)}
    rng = np.random.default_rng(5)
    scrambled = []
    for u, seq in enumerate(data.sequences):
        other = seq.copy()
        taken = np.concatenate([seq, valid.candidates[row[u]]])
        other[-1] = rng.choice(np.setdiff1d(np.arange(1, N_ITEMS + 1), taken))
        scrambled.append(other)
    changed = dataclasses.replace(data, sequences=scrambled)
    assert all(changed.split_target(u, "test") != data.split_target(u, "test") for u in range(data.n_users))
    train_llmsrec(changed, tmp_path, cached_config(), out_b)
    a, b = (json.loads((o / "config.json").read_text()) for o in (out_a, out_b))
    assert a["hybrid"]["weight"] == b["hybrid"]["weight"]
    assert a["hybrid"]["valid"]["grid"] == b["hybrid"]["valid"]["grid"]


def test_fit_hybrid_follows_the_better_model(data: PreparedData) -> None:
    valid = ValidationSet.load(data, 10_000, 0)
    rng = np.random.default_rng(0)
    good = np.where(np.arange(100) == 0, 5.0, 0.0)[None].repeat(len(valid.users), 0) + rng.normal(
        0, 0.1, (len(valid.users), 100)
    )
    noise = rng.normal(0, 1.0, (len(valid.users), 100))
    config, metrics = fit_hybrid(good, noise, valid)
    assert metrics["ndcg@10"] == 1.0 and config.weight > 0.0  # SASRec alone (weight 0) is noise
    assert metrics["grid"]["0.00"] < 1.0 and metrics["grid"]["1.00"] == 1.0
    config, metrics = fit_hybrid(noise, good, valid)
    assert config.weight == 0.0 and metrics["ndcg@10"] == 1.0  # ties keep the smaller LLM-SRec share
    with pytest.raises(ValueError, match="shapes differ"):
        fit_hybrid(good[:, :5], noise, valid)


def test_loss_weights_of_the_variants_are_recorded(data, patched, tmp_path) -> None:
    train_llmsrec(data, tmp_path, cached_config(variant="llm-only"), tmp_path / "o")
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["train"]["resolved_weights"] == dataclasses.asdict(LossWeights(1.0, 0.0, 0.0))


def test_hybrid_scorer_blends_the_two_models_as_recorded(
    data, patched, teacher, monkeypatch, tmp_path
) -> None:
    from training.llmsrec import hybrid as hybrid_module
    from training.sasrec.scorer import SASRecScorer

    out = tmp_path / "ckpt"
    train_llmsrec(data, tmp_path / "sasrec", cached_config(), out)
    monkeypatch.setattr(hybrid_module, "load_sasrec", lambda *a, **k: teacher)
    scorer = hybrid_module.load_hybrid_scorer(out, data)
    recorded = HybridConfig.from_dict(json.loads((out / "config.json").read_text())["hybrid"])
    assert scorer.config == recorded
    histories = [s[:-1] for s in data.sequences]
    stamps = [None if t is None else t[:-1] for t in data.timestamps]
    cands = np.arange(1, 41).reshape(10, 4)
    llm = load_llmsrec_scorer(out, data, expect_variant="llmsrec").score(histories, cands, stamps)
    cf = SASRecScorer(teacher).score(histories, cands)
    expected = (
        recorded.weight * llm / recorded.scale_llmsrec + (1 - recorded.weight) * cf / recorded.scale_sasrec
    )
    np.testing.assert_allclose(scorer.score(histories, cands, stamps), expected, rtol=1e-5, atol=1e-6)
    train_llmsrec(data, tmp_path / "sasrec", cached_config(recipe="paper", epochs=1), tmp_path / "paper")
    with pytest.raises(CheckpointError, match="no hybrid record"):
        hybrid_module.load_hybrid_scorer(tmp_path / "paper", data)
