"""Genre prompt: exact wording, soft rows at the markers, LM loss on the target only, scores = continuation
likelihoods, and training on a genre makes that genre rank first while the LLM stays bit-identical."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from models.allmrec import ALLMRecStage1, ALLMRecStage2, Stage1Config, Stage2Config
from models.allmrec_encoder import ALLMRecEncoder
from models.allmrec_genre import GenreEncoder, genre_prompt, genre_target, tidy_sentence
from models.prompts import ALLMREC_ITEM, ALLMREC_USER, ALLMRecPromptConfig
from models.runtime import LoadedLLM
from models.sasrec import SASRec, SASRecConfig
from models.soft_prompt import add_special_tokens
from tests.models.tiny_llm import one_torch_thread, tiny_llm
from training.common.llm import freeze_llm, tiny_llama, tiny_tokenizer

GENRES = ["Action", "Comedy", "Drama", "Horror"]
TITLES = [f"Film {i}" for i in range(1, 13)]
PROMPT = ALLMRecPromptConfig(verb="watched", noun="movie", history_len=4, max_title_tokens=8)
HISTORIES = [[1, 2, 3], [4, 5, 6, 7, 8, 9]]


@pytest.fixture(scope="module")
def llm():  # type: ignore[no-untyped-def]
    return tiny_llm()


def responsive_llm() -> LoadedLLM:
    """A tiny Llama with a wide init (std 0.2): at the default 0.02 attention is so uniform that a few soft
    positions barely move the output, and a training test would measure nothing."""
    tokenizer = tiny_tokenizer()
    model = tiny_llama(len(tokenizer), init_std=0.2)
    special = add_special_tokens(model, tokenizer)
    freeze_llm(model)
    return LoadedLLM(model, tokenizer, special)


def make_encoder(llm: LoadedLLM, learned: bool = True) -> GenreEncoder:
    """The genre encoder over random A-LLMRec parts (SASRec d_cf 8, latent 6) or the titles-only one."""
    if not learned:
        return GenreEncoder(llm.model, llm.tokenizer, GENRES, llm.special_tokens, PROMPT, titles=TITLES)
    torch.manual_seed(0)
    n = len(TITLES)
    sasrec = SASRec(SASRecConfig(n_items=n, hidden=8, n_blocks=1, max_len=8)).eval()
    stage1 = ALLMRecStage1(Stage1Config(n_items=n, d_cf=8, d_text=5, latent=6)).eval()
    stage1.set_tables(torch.randn(n + 1, 8), torch.randn(n + 1, 5))
    stage2 = ALLMRecStage2(Stage2Config(d_cf=8, latent=6, llm_hidden=32))
    allmrec = ALLMRecEncoder(
        llm.model, llm.tokenizer, sasrec, stage1, stage2, TITLES, llm.special_tokens, PROMPT
    )
    return GenreEncoder(llm.model, llm.tokenizer, GENRES, llm.special_tokens, PROMPT, allmrec=allmrec)


def test_prompt_wording() -> None:
    assert genre_prompt(["A", "B"], PROMPT, soft=True) == (
        '[UserOut] is a user representation. This user has watched "A"[HistoryEmb],"B"[HistoryEmb] '
        "in the previous. The movie genres this user likes most are:"
    )
    assert genre_prompt(["A"], PROMPT, soft=False) == (
        'This user has watched "A" in the previous. The movie genres this user likes most are:'
    )
    assert genre_target(["Drama", "Comedy"]) == " Drama, Comedy."
    assert sorted(genre_target(GENRES, random.Random(1))[1:-1].split(", ")) == GENRES


def test_generated_sentence_is_tidied() -> None:
    assert tidy_sentence(" Drama, Thriller, Drama, Horror, Thriller, Horror,") == "Drama, Thriller, Horror."
    assert tidy_sentence(" Comedy. Then more\nnext line") == "Comedy."
    assert tidy_sentence(" \n") == ""


def test_soft_rows_land_at_markers(llm) -> None:  # type: ignore[no-untyped-def]
    enc = make_encoder(llm)
    allmrec = enc.allmrec
    assert allmrec is not None
    with torch.no_grad():
        batch, labels = enc.batch(HISTORIES)
        assert labels is None
        hist = batch.input_ids == llm.special_tokens[ALLMREC_ITEM]
        assert hist.sum(1).tolist() == [3, 4]  # history window = 4 most recent
        assert torch.allclose(batch.inputs_embeds[hist], allmrec.item_rows([1, 2, 3, 6, 7, 8, 9]))
        user = batch.input_ids == llm.special_tokens[ALLMREC_USER]
        want = allmrec.stage2.user_rows(allmrec.cf_users(HISTORIES))
        assert torch.allclose(batch.inputs_embeds[user], want)
    with pytest.raises(ValueError, match="unknown item ids"):
        enc.batch([[99]])
    with pytest.raises(ValueError, match="empty history"):
        enc.batch([[]])


def test_loss_is_cross_entropy_on_target_tokens_only(llm) -> None:  # type: ignore[no-untyped-def]
    enc = make_encoder(llm, learned=False)
    target = " Drama."
    with one_torch_thread(), torch.no_grad():
        got = enc.loss(HISTORIES[:1], [target])
        prompt_ids = llm.tokenizer(enc.prompts(HISTORIES[:1]))["input_ids"][0]
        tgt = llm.tokenizer(target, add_special_tokens=False)["input_ids"]
        logits = llm.model(input_ids=torch.tensor([prompt_ids + tgt])).logits[0]
        want = F.cross_entropy(logits[len(prompt_ids) - 1 : -1], torch.tensor(tgt))
    assert float(got) == pytest.approx(float(want), abs=1e-5)


def test_training_on_a_genre_makes_it_rank_first() -> None:
    llm = responsive_llm()
    enc = make_encoder(llm)
    assert enc.allmrec is not None
    stage2 = enc.allmrec.stage2
    llm_before = {k: v.clone() for k, v in llm.model.state_dict().items()}
    with one_torch_thread():
        with torch.no_grad():
            before = enc.scores(HISTORIES)
        target = int(before.mean(0).argmin())  # the genre the untrained prompt likes least
        assert not bool((before.argmax(1) == target).any())
        name = GENRES[target]
        optimizer = torch.optim.Adam(stage2.parameters(), lr=3e-2)
        for _ in range(60):
            loss = enc.loss(HISTORIES, [f" {name}."] * 2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            after = enc.scores(HISTORIES)
            sentence = enc.explain(HISTORIES, max_new_tokens=8)
    assert (after.argmax(1) == target).all()
    assert (after[:, target] > before[:, target]).all()
    assert all(torch.equal(v, llm_before[k]) for k, v in llm.model.state_dict().items())
    assert all(s.startswith("The movie genres this user likes most are:") for s in sentence)


def test_titles_only_baseline_scores_are_plain_text_likelihoods(llm) -> None:  # type: ignore[no-untyped-def]
    enc = make_encoder(llm, learned=False)
    with one_torch_thread(), torch.no_grad():
        scores = enc.scores(HISTORIES[:1])
        prompt_ids = llm.tokenizer(enc.prompts(HISTORIES[:1]))["input_ids"][0]
        for g, name in enumerate(GENRES):
            cont = llm.tokenizer(" " + name, add_special_tokens=False)["input_ids"]
            logp = F.log_softmax(llm.model(input_ids=torch.tensor([prompt_ids + cont])).logits[0], -1)
            want = sum(float(logp[len(prompt_ids) - 1 + k, t]) for k, t in enumerate(cont)) / len(cont)
            assert float(scores[0, g]) == pytest.approx(want, abs=1e-4)


@pytest.mark.slow
def test_real_smollm2_titles_only_scores_follow_the_history() -> None:
    """The frozen SmolLM2 reading horror titles rates Horror higher, and Children's lower, than after
    children's animation titles (a differential check: the model's absolute preferences do not matter)."""
    from training.common.llm import load_llm

    llm = load_llm("smollm2", device="cpu", dtype="float32")
    titles = [
        "Nightmare on Elm Street, A",
        "Scream",
        "Halloween: The Curse of Michael Myers",
        "Friday the 13th",
        "Shining, The",
        "Toy Story",
        "Aladdin",
        "Lion King, The",
        "Pinocchio",
        "Cinderella",
    ]
    genres = ["Horror", "Children's", "Documentary", "Western"]
    enc = GenreEncoder(llm.model, llm.tokenizer, genres, llm.special_tokens, PROMPT, titles=titles)
    with one_torch_thread(), torch.no_grad():
        horror, kids = enc.scores([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    assert horror[0] - kids[0] > 0  # Horror
    assert kids[1] - horror[1] > 0  # Children's
