"""A-LLMRec training on a toy catalog (real SASRec training, real MiniLM text embeddings, tiny random Llama):
stage 1 and 2 checkpoints, the stage-2 step touching only F_U/F_I, the scorer, the cold split on ml-100k."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from llmrec.cli import build_cli
from models.allmrec_encoder import prompt_order
from models.allmrec_scoring import SCORE_MODES, ALLMRecScoring, blend, llm_scores
from tests.models.tiny_llm import one_torch_thread, tiny_llm
from training.allmrec import checkpoint, text_encoder
from training.allmrec import stage2 as stage2_module
from training.allmrec.calibration import (
    BLEND_WEIGHTS,
    COLD_OFFSETS,
    best_scoring,
    calibrate_checkpoint,
    calibration_table,
)
from training.allmrec.checkpoint import load_allmrec_encoder, load_stage1, load_stage2
from training.allmrec.cold import make_cold_split
from training.allmrec.config import Stage1TrainConfig, Stage2TrainConfig, check_stage2
from training.allmrec.scorer import ALLMRecScorer, evaluate_users, scoring_of
from training.allmrec.stage1 import cold_mask, train_stage1
from training.allmrec.stage2 import setup_stage2, stage2_examples, train_stage2, training_candidates
from training.common.errors import CheckpointError, ConfigError
from training.data.dataset import Item, PreparedData, load_prepared
from training.data.prepare import PrepareConfig, prepare_dataset
from training.evaluation.cold import cold_test_users, read_cold_items
from training.evaluation.protocol import evaluate
from training.sasrec.checkpoint import load_sasrec
from training.sasrec.config import SASRecTrainConfig
from training.sasrec.scorer import SASRecScorer
from training.sasrec.train import train_sasrec
from training.scorers import load_scorer

N_ITEMS = 40


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("text-cache")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> PreparedData:
    rng = np.random.default_rng(0)
    genres = ("Drama", "Comedy", "Horror")
    items = [Item(i, str(i), f"Film {i}", 1990 + i % 10, (genres[i % 3],)) for i in range(1, N_ITEMS + 1)]
    seqs = [
        rng.choice(np.arange(1, N_ITEMS + 1), size=int(rng.integers(5, 10)), replace=False) for _ in range(12)
    ]
    return PreparedData(
        root=tmp_path_factory.mktemp("toy"),
        name="toy",
        verb="watched",
        noun="movie",
        genres=list(genres),
        items=items,
        users=[f"u{u}" for u in range(len(seqs))],
        sequences=[s.astype(np.int64) for s in seqs],
        timestamps=[None] * len(seqs),
    )


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory, cache_dir) -> dict[str, Path]:
    """SASRec → stage 1 → stage 2 on the toy data (stage 2 over the tiny Llama)."""
    root = tmp_path_factory.mktemp("ckpt")
    mp = pytest.MonkeyPatch()
    mp.setenv("LLMREC_CACHE_DIR", str(cache_dir))
    sasrec_cfg = SASRecTrainConfig(
        hidden=8, max_len=8, epochs=2, eval_every=1, eval_protocol="1+19", progress=False, device="cpu"
    )
    train_sasrec(data, sasrec_cfg, root / "sasrec")
    stage1 = train_stage1(
        data, root / "sasrec", Stage1TrainConfig(epochs=3, lr=1e-3, device="cpu", progress=False), root / "s1"
    )
    cfg2 = Stage2TrainConfig(
        epochs=1,
        batch_size=4,
        max_users=4,
        eval_max_users=3,
        max_title_tokens=6,
        device="cpu",
        progress=False,
    )
    result = train_stage2(data, root / "sasrec", root / "s1", cfg2, root / "s2", llm=tiny_llm(seed=0))
    mp.undo()
    return {
        "sasrec": root / "sasrec",
        "s1": root / "s1",
        "s2": root / "s2",
        "stage1": stage1,
        "stage2": result,
    }


def test_stage1_checkpoint_holds_the_tables(data, trained) -> None:
    stage1, config = load_stage1(trained["s1"])
    sasrec = load_sasrec(trained["sasrec"])
    torch.testing.assert_close(stage1.cf_item_emb[1:], sasrec.item_embeddings().detach()[1:])
    assert stage1.text_emb.shape == (N_ITEMS + 1, 384) and stage1.text_emb[0].abs().sum() == 0
    assert torch.allclose(
        stage1.text_emb[1:].norm(dim=-1), torch.ones(N_ITEMS), atol=1e-4
    )  # MiniLM normalises
    assert not any(p.requires_grad for p in stage1.parameters())
    history = config["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert {"rec", "matching", "item_recon", "text_recon", "alignment_hr@10"} <= set(history[-1])
    assert (trained["s1"] / "training_curve.png").stat().st_size > 0


def test_finetuning_the_text_encoder_moves_only_its_last_layer(
    data, trained, cache_dir, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("LLMREC_CACHE_DIR", str(cache_dir))
    config = Stage1TrainConfig(epochs=1, lr=1e-3, device="cpu", progress=False, finetune_text_encoder=True)
    train_stage1(data, trained["sasrec"], config, tmp_path / "s1")
    tuned, _ = load_stage1(tmp_path / "s1")
    cached = torch.from_numpy(text_encoder.load_text_embeddings(data, cache_dir))
    assert not torch.allclose(tuned.text_emb, cached, atol=1e-5)  # the table comes from the tuned encoder
    encoder = text_encoder.TrainableTextEncoder()
    layers = encoder.model[0].auto_model.encoder.layer
    assert {id(p) for p in encoder.parameters()} == {id(p) for p in layers[-1].parameters()}


def test_stage2_checkpoint_round_trips_into_a_scorer(data, trained) -> None:
    stage2, config = load_stage2(trained["s2"])
    assert config["stage1_dir"] == str(trained["s1"].resolve()) and config["prompt"]["verb"] == "watched"
    assert trained["stage2"]["valid"]["n_users"] == 3
    encoder, _ = load_allmrec_encoder(trained["s2"], data, llm=tiny_llm(seed=0))
    for key, value in stage2.state_dict().items():
        torch.testing.assert_close(encoder.stage2.state_dict()[key], value)
    result = evaluate(data, ALLMRecScorer(encoder), "1+19", max_users=4, progress=False)
    assert result["n_users"] == 4 and 0.0 <= result["hr@1"] <= 1.0
    assert (trained["s2"] / "training_curve.png").is_file() and (trained["s2"] / "history.json").is_file()


def test_stage2_records_the_scoring_chosen_on_validation(data, trained, monkeypatch) -> None:
    _, config = load_stage2(trained["s2"])
    record = config["calibration"]
    assert config["scoring"] == record["scoring"] == trained["stage2"]["scoring"]
    assert len(record["table"]) == len(SCORE_MODES) * len(BLEND_WEIGHTS) + 1  # + SASRec alone
    best = max(r["hr@1"] for r in record["table"] if r["scoring"] is not None)
    assert record["valid"]["hr@1"] == best and record["valid"]["n_users"] == data.n_users
    assert record["llm_only"]["scoring"]["sasrec_weight"] == 0.0
    # the scorer the CLI evaluates with applies exactly that scoring
    monkeypatch.setattr(checkpoint, "load_checkpoint_llm", lambda *_a, **_k: tiny_llm(seed=0))
    scorer = load_scorer("allmrec", trained["s2"], data, "cpu")
    assert isinstance(scorer, ALLMRecScorer) and scorer.scoring == ALLMRecScoring(**config["scoring"])


def test_pmi_scores_are_the_prompt_minus_the_prior_prompt(data, trained) -> None:
    encoder, _ = load_allmrec_encoder(trained["s2"], data, llm=tiny_llm(seed=0))
    histories = [data.split_input(0, "test"), data.split_input(1, "test")]
    cands = [[3, 7, 11], [3, 7, 11]]
    with torch.no_grad():
        rows = encoder.candidate_rows(histories, cands)
        priors = encoder.prior_rows(cands)
    torch.testing.assert_close(priors[0][0], priors[1][0])  # the prior knows nothing of the user
    pmi = encoder.candidate_scores(histories, cands, "pmi")
    for (sums, _), (prior, _), got in zip(rows, priors, pmi, strict=True):
        np.testing.assert_allclose(got, (sums - prior).numpy(), rtol=1e-5, atol=1e-5)
    means = encoder.candidate_scores(histories, cands, "mean")
    np.testing.assert_allclose(means[0], (rows[0][0] / rows[0][1]).numpy(), rtol=1e-5)


def test_scorer_blend_matches_the_pure_functions(data, trained) -> None:
    encoder, _ = load_allmrec_encoder(trained["s2"], data, llm=tiny_llm(seed=0))
    scoring = ALLMRecScoring("pmi-mean", 0.3, llm_scale=0.5, sasrec_scale=2.0)
    scorer = ALLMRecScorer(encoder, batch_size=2, scoring=scoring)
    histories = [data.split_input(u, "test") for u in range(3)]
    cands = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    raw = scorer.raw(histories, cands, prior=True)
    llm = llm_scores(
        np.stack([r.sums for r in raw]),
        np.stack([r.counts for r in raw]),
        np.stack([r.prior for r in raw]),
        "pmi-mean",
    )
    expected = blend(llm, SASRecScorer(encoder.sasrec).score(histories, cands), scoring)
    np.testing.assert_allclose(scorer.score(histories, cands), expected, rtol=1e-6)


def test_cold_candidates_take_their_text_predicted_score_and_calibration_tries_offsets(data, trained) -> None:
    """Cold candidates' SASRec side: SASRec's user vector against stage 1's imputed_table rows; the
    calibration grid adds every cold offset (and neutral) once validation candidates hold cold items."""
    encoder, _ = load_allmrec_encoder(trained["s2"], data, llm=tiny_llm(seed=0))
    encoder.stage1.cold[3::3] = True  # items 3, 6, 9, …: as if SASRec never trained them
    scoring = ALLMRecScoring("sum", 0.4, sasrec_scale=2.0, cold_offset=-1.0)
    scorer = ALLMRecScorer(encoder, batch_size=2, scoring=scoring)
    histories = [data.split_input(u, "test") for u in range(3)]
    cands = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    sasrec, cold, imputed = scorer.sasrec_side(histories, cands)
    users = SASRecScorer(encoder.sasrec).user_vectors(histories)
    table = encoder.stage1.imputed_table().numpy()
    np.testing.assert_array_equal(cold, cands % 3 == 0)
    assert imputed is not None
    np.testing.assert_allclose(imputed, np.einsum("bd,bcd->bc", users, table[cands]), rtol=1e-5)
    np.testing.assert_allclose(sasrec, SASRecScorer(encoder.sasrec).score(histories, cands))
    raw = scorer.raw(histories, cands, prior=False)
    llm = llm_scores(np.stack([r.sums for r in raw]), np.stack([r.counts for r in raw]), None, "sum")
    np.testing.assert_allclose(scorer.score(histories, cands), blend(llm, sasrec, scoring, cold, imputed))
    rows = calibration_table(data, scorer, np.arange(data.n_users))
    assert len(rows) == len(SCORE_MODES) * len(BLEND_WEIGHTS) * (1 + len(COLD_OFFSETS)) + 1
    offsets = {r["scoring"]["cold_offset"] for r in rows if r["scoring"] is not None}
    assert offsets == {None, *COLD_OFFSETS}
    # --cold fixes the cold rule and leaves the rest to validation; a bad value names the allowed ones
    assert best_scoring(rows, cold="-3")["scoring"]["cold_offset"] == -3.0
    assert best_scoring(rows, cold="neutral")["scoring"]["cold_offset"] is None
    assert best_scoring(rows)["hr@1"] >= best_scoring(rows, cold="-3")["hr@1"]
    with pytest.raises(ConfigError, match="one of the offsets"):
        best_scoring(rows, cold="-3.3")
    warm_rows = [r for r in rows if r["scoring"] is None or r["scoring"]["cold_offset"] is None]
    with pytest.raises(ConfigError, match="no calibration row"):
        best_scoring(warm_rows, cold="-1")


def test_calibrate_updates_a_checkpoint_in_place(data, trained, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(checkpoint, "load_checkpoint_llm", lambda *_a, **_k: tiny_llm(seed=0))
    copy = tmp_path / "s2"
    shutil.copytree(trained["s2"], copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(
        json.dumps({k: v for k, v in config.items() if k not in ("scoring", "calibration")})
    )
    assert scoring_of(load_stage2(copy)[1]) == ALLMRecScoring()  # older checkpoints: the paper's sum
    record = calibrate_checkpoint(copy, data, max_users=5, device="cpu")
    _, updated = load_stage2(copy)
    assert updated["scoring"] == record["scoring"] and updated["calibration"]["valid"]["n_users"] == 5
    assert updated["model"] == config["model"]  # nothing else changed


def test_stage2_continues_from_a_checkpoint_of_the_same_template(data, trained) -> None:
    config = Stage2TrainConfig(device="cpu", max_title_tokens=6, progress=False, init=str(trained["s2"]))
    encoder, _, _ = setup_stage2(data, trained["sasrec"], trained["s1"], config, llm=tiny_llm(seed=0))
    saved, _ = load_stage2(trained["s2"])
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(encoder.stage2.state_dict()[key], value)
    assert all(p.requires_grad for p in encoder.stage2.parameters())
    other = dataclasses.replace(config, template="paper")  # trained with the default, "lead"
    with pytest.raises(ConfigError, match="another stage-2 shape or prompt template"):
        setup_stage2(data, trained["sasrec"], trained["s1"], other, llm=tiny_llm(seed=0))


def test_stage2_step_changes_only_the_projections(data, trained) -> None:
    config = Stage2TrainConfig(device="cpu", max_title_tokens=6, progress=False)
    encoder, _, _ = setup_stage2(data, trained["sasrec"], trained["s1"], config, llm=tiny_llm(seed=0))
    frozen = {
        "llm": {k: v.clone() for k, v in encoder.llm.state_dict().items()},
        "stage1": {k: v.clone() for k, v in encoder.stage1.state_dict().items()},
        "sasrec": {k: v.clone() for k, v in encoder.sasrec.state_dict().items()},
    }
    before = {k: v.clone() for k, v in encoder.stage2.state_dict().items()}
    trainable = [p for p in encoder.stage2.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=1e-3)
    examples = stage2_examples(data, 0, 0)[:2]
    rng = np.random.default_rng(0)
    cands = [training_candidates(rng, e, encoder, 20) for e in examples]
    encoder.loss([e.history for e in examples], cands, [e.target for e in examples]).backward()
    opt.step()
    modules = {"llm": encoder.llm, "stage1": encoder.stage1, "sasrec": encoder.sasrec}
    for name, module in modules.items():
        assert all(torch.equal(v, frozen[name][k]) for k, v in module.state_dict().items()), name
        assert not any(p.requires_grad for p in module.parameters()), name
    assert all(
        not torch.equal(v, before[k])
        for k, v in encoder.stage2.state_dict().items()
        if v.dtype.is_floating_point
    )


def test_ranking_losses_are_the_lm_loss_and_a_softmax_over_candidates(data, trained) -> None:
    config = Stage2TrainConfig(device="cpu", max_title_tokens=6, progress=False)
    encoder, _, _ = setup_stage2(data, trained["sasrec"], trained["s1"], config, llm=tiny_llm(seed=0))
    examples = stage2_examples(data, 0, 0)[:2]
    rng = np.random.default_rng(0)
    cands = [training_candidates(rng, e, encoder, 5) for e in examples]
    histories, targets = [e.history for e in examples], [e.target for e in examples]
    losses = encoder.ranking_losses(histories, cands, targets)
    with torch.no_grad():
        rows = encoder.candidate_rows(histories, cands)
        lm = encoder.loss(histories, cands, targets)
    where = [c.index(t) for c, t in zip(cands, targets, strict=True)]
    logits = torch.stack([s for s, _ in rows])
    expected_rank = torch.nn.functional.cross_entropy(logits, torch.tensor(where))
    torch.testing.assert_close(losses["rank"].detach(), expected_rank, rtol=1e-4, atol=1e-4)
    per_example = [-rows[b][0][w] / rows[b][1][w] for b, w in enumerate(where)]
    torch.testing.assert_close(losses["lm"].detach(), torch.stack(per_example).mean(), rtol=1e-4, atol=1e-4)
    assert (
        abs(float(lm) - float(losses["lm"].detach())) < 0.5
    )  # the paper's loss averages over all target tokens
    (losses["lm"] + losses["rank"]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.stage2.parameters())


@pytest.mark.parametrize("mode", ["mean", "pmi", "pmi-mean"])
def test_ranking_loss_ranks_by_the_chosen_score_mode(data, trained, mode: str) -> None:
    config = Stage2TrainConfig(device="cpu", max_title_tokens=6, progress=False, rank_score=mode)
    check_stage2(config)
    encoder, _, _ = setup_stage2(data, trained["sasrec"], trained["s1"], config, llm=tiny_llm(seed=0))
    examples = stage2_examples(data, 0, 0)[:2]
    cands = [training_candidates(np.random.default_rng(0), e, encoder, 5) for e in examples]
    histories, targets = [e.history for e in examples], [e.target for e in examples]
    losses = encoder.ranking_losses(histories, cands, targets, mode)
    # the scores inference ranks by in that mode (numpy, float64), as the softmax's logits
    scores = np.stack(encoder.candidate_scores(histories, cands, mode))
    where = torch.tensor([c.index(t) for c, t in zip(cands, targets, strict=True)])
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(scores).float(), where)
    torch.testing.assert_close(losses["rank"].detach(), expected, rtol=1e-4, atol=1e-4)
    plain = encoder.ranking_losses(histories, cands, targets)  # `sum`: another loss, the same LM part
    assert not torch.allclose(plain["rank"], losses["rank"])
    torch.testing.assert_close(plain["lm"], losses["lm"])
    losses["rank"].backward()  # the prior runs without gradient; the user side still gets one
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.stage2.parameters())
    with pytest.raises(ConfigError, match="rank-score"):
        check_stage2(Stage2TrainConfig(rank_score="max"))


def test_each_epoch_validates_by_the_ranking_losss_score(data, trained, monkeypatch) -> None:
    config = Stage2TrainConfig(device="cpu", progress=False, rank_score="pmi")
    encoder, _, _ = setup_stage2(data, trained["sasrec"], trained["s1"], config, llm=tiny_llm(seed=0))
    seen = []
    record = lambda data, scorer, *a, **kw: seen.append(scorer.scoring) or {}  # noqa: E731
    monkeypatch.setattr(stage2_module, "evaluate", record)
    stage2_module.validate(data, encoder, config)
    assert seen == [ALLMRecScoring("pmi")]


def test_training_candidates_hold_the_target_and_fresh_negatives(data, trained) -> None:
    config = Stage2TrainConfig(device="cpu", progress=False)
    encoder, _, _ = setup_stage2(data, trained["sasrec"], trained["s1"], config, llm=tiny_llm(seed=0))
    rng = np.random.default_rng(1)
    for example in stage2_examples(data, 0, 0):
        assert example.target not in example.history.tolist()
        cands = training_candidates(rng, example, encoder, 20)
        assert len(set(cands)) == 20 and example.target in cands
        assert not (set(cands) - {example.target}) & example.seen


def test_stage2_refuses_another_sasrec(data, trained, tmp_path) -> None:
    cfg = SASRecTrainConfig(
        hidden=8,
        max_len=8,
        epochs=1,
        eval_every=1,
        eval_protocol="1+19",
        progress=False,
        seed=7,
        device="cpu",
    )
    train_sasrec(data, cfg, tmp_path / "other")
    with pytest.raises(ConfigError, match="another SASRec"):
        setup_stage2(data, tmp_path / "other", trained["s1"], Stage2TrainConfig(device="cpu"), llm=tiny_llm())


def test_checkpoint_errors_name_the_problem(trained, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="expected an A-LLMRec stage2"):
        load_stage2(trained["s1"])
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        load_stage1(tmp_path)
    with pytest.raises(ConfigError, match="--ckpt is required"):
        load_scorer("allmrec", None, None, "cpu")  # type: ignore[arg-type]


def test_scores_do_not_depend_on_the_candidate_column(data, trained) -> None:
    encoder, _ = load_allmrec_encoder(trained["s2"], data, llm=tiny_llm(seed=0))
    scorer = ALLMRecScorer(encoder, batch_size=2)
    history = [data.sequences[0][:-1]]
    row = np.array([[3, 7, 11, 19, 23]])
    perm = np.array([[19, 3, 23, 11, 7]])
    by_id = dict(zip(row[0].tolist(), scorer.score(history, row)[0], strict=True))
    permuted = dict(zip(perm[0].tolist(), scorer.score(history, perm)[0], strict=True))
    assert by_id == pytest.approx(permuted)
    firsts = {int(prompt_order(np.array([c, 1, 2, 3, 4]), 0)[0]) for c in range(5, 40)}
    assert len(firsts) > 1  # the positive (column 0) is not always shown first


def test_generation_scores_are_one_hot_and_counted(data, trained) -> None:
    encoder, _ = load_allmrec_encoder(trained["s2"], data, llm=tiny_llm(seed=0))
    scorer = ALLMRecScorer(encoder, "generate", batch_size=3)
    histories = [data.split_input(u, "test") for u in range(3)]
    scores = scorer.score(histories, np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]]))
    assert set(np.unique(scores)) <= {0.0, 1.0} and (scores.sum(1) <= 1).all()
    extra = scorer.extra_metrics()
    assert extra["generated"] == 3 and extra["gen_no_match"] == int((scores.sum(1) == 0).sum())
    assert ALLMRecScorer(encoder).extra_metrics() == {}


def test_evaluate_users_agrees_with_the_shared_protocol(data, trained) -> None:
    scorer = SASRecScorer(load_sasrec(trained["sasrec"]))
    whole = evaluate(data, scorer, "1+19", progress=False)
    subset = evaluate_users(data, scorer, np.arange(data.n_users), "1+19")
    assert {k: subset[k] for k in ("hr@1", "ndcg@10", "mrr")} == {
        k: whole[k] for k in ("hr@1", "ndcg@10", "mrr")
    }
    with pytest.raises(ConfigError, match="no users"):
        evaluate_users(data, scorer, np.array([], dtype=np.int64))


def test_text_embeddings_are_cached_by_text_hash(data, cache_dir, monkeypatch) -> None:
    first = text_encoder.load_text_embeddings(data, cache_dir)  # computed by the trained fixture or now

    def refuse(*_a, **_k):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(text_encoder, "encode_texts", refuse)
    np.testing.assert_array_equal(text_encoder.load_text_embeddings(data, cache_dir), first)
    assert text_encoder.item_texts(data)[0] == "Film 1 (1991), Comedy"
    assert text_encoder.texts_hash(["a"]) != text_encoder.texts_hash(["b"])


def test_cold_split_of_ml100k(shared_data_dir, tmp_path) -> None:
    data = load_prepared(
        prepare_dataset(PrepareConfig(dataset="ml-100k"), shared_data_dir / "ml-100k", tmp_path / "d")
    )
    cold_data = load_prepared(make_cold_split(data, tmp_path / "cold", fraction=0.1, seed=3))
    cold = set(read_cold_items(cold_data.root))
    assert len(cold) == round(0.1 * data.n_items) and cold_data.name == "ml-100k-cold"
    for old, new in zip(data.sequences, cold_data.sequences, strict=True):
        assert not cold & set(new[:-2].tolist())  # SASRec never trains on a cold item
        assert new[-2:].tolist() == old[-2:].tolist()  # validation and test targets unchanged
    users = cold_test_users(cold_data, np.arange(cold_data.n_users))
    assert len(users) > 0 and all(cold_data.split_target(int(u), "test") in cold for u in users)
    assert cold_mask(cold_data)[sorted(cold)].all() and int(cold_mask(cold_data).sum()) == len(cold)
    with pytest.raises(ConfigError, match="exists"):
        make_cold_split(data, tmp_path / "cold")


def test_cli_registers_the_stages_and_reports_errors(data, trained, tmp_path) -> None:
    runner = CliRunner()
    args = ["train", "allmrec-stage1", "--data", str(tmp_path), "--sasrec", "x", "--out", str(tmp_path / "o")]
    result = runner.invoke(build_cli(), args)
    assert result.exit_code == 2 and "dataset.json" in result.output and "Traceback" not in result.output
    result = runner.invoke(build_cli(), ["train", "allmrec-stage2", "--help"])
    assert result.exit_code == 0 and "--stage1" in result.output and "--n-candidates" in result.output
    with pytest.raises(ConfigError, match="--epochs must be >= 1"):
        train_stage1(data, trained["sasrec"], Stage1TrainConfig(epochs=0), tmp_path / "never")
    with pytest.raises(ConfigError, match="--n-candidates"):
        train_stage2(
            data, trained["sasrec"], trained["s1"], Stage2TrainConfig(n_candidates=1), tmp_path / "never"
        )
