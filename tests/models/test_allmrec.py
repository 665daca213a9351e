"""A-LLMRec modules, hand-checked losses, the stage-2 prompt embeddings, candidate likelihoods and greedy
decoding on a tiny random Llama; one slow check of the packed likelihood on the real SmolLM2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.allmrec import (
    ALLMRecStage1,
    ALLMRecStage2,
    Stage1Config,
    Stage1Output,
    Stage1Weights,
    Stage2Config,
    lm_loss,
    stage1_loss,
)
from models.allmrec_encoder import ALLMRecEncoder, match_candidate, normalise_title
from models.lm_scoring import IGNORE, continuation_logprobs, greedy_generate, target_logits
from models.prompts import (
    ALLMREC_ITEM,
    ALLMREC_USER,
    ALLMRecPromptConfig,
    allmrec_prompt,
    parse_generated_title,
)
from models.sasrec import SASRec, SASRecConfig
from tests.models.tiny_llm import one_torch_thread, tiny_llm

TITLES = ["Toy Story", "GoldenEye", "Four Rooms", "Get Shorty", "Copycat", "Heat", "Casino", "Babe"]
N = len(TITLES)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def make_encoder(llm=None, cold: list[int] | None = None, seed: int = 0) -> ALLMRecEncoder:
    llm = llm or tiny_llm()
    torch.manual_seed(seed)
    sasrec = SASRec(SASRecConfig(N, hidden=8, max_len=6)).eval().requires_grad_(False)
    stage1 = ALLMRecStage1(Stage1Config(N, d_cf=8, d_text=12, latent=6))
    mask = torch.zeros(N + 1, dtype=torch.bool)
    if cold:
        mask[cold] = True
    stage1.set_tables(sasrec.item_embeddings().detach(), torch.randn(N + 1, 12), mask)
    stage1.requires_grad_(False)
    stage2 = ALLMRecStage2(Stage2Config(8, 6, llm.spec["hidden_size"]))
    prompt = ALLMRecPromptConfig(history_len=3, max_title_tokens=8)
    return ALLMRecEncoder(
        llm.model, llm.tokenizer, sasrec, stage1, stage2, TITLES, llm.special_tokens, prompt
    )


def test_stage1_loss_by_hand() -> None:
    one, zero = torch.ones(1, 2), torch.zeros(1, 2)
    pos = Stage1Output(
        cf=torch.tensor([[1.0, 1.0]]),
        text=torch.tensor([[0.0, 2.0]]),
        item_latent=torch.tensor([[0.5, 0.5]]),
        item_recon=torch.tensor([[2.0, 0.0]]),
        text_latent=torch.tensor([[0.5, 1.5]]),
        text_recon=torch.tensor([[0.0, 1.0]]),
    )
    neg = Stage1Output(
        cf=zero, text=zero, item_latent=zero, item_recon=zero, text_latent=zero, text_recon=one
    )
    users = torch.tensor([[1.0, 3.0]])
    parts = stage1_loss(users, pos, neg, Stage1Weights())
    # pos logit = mean(1*2, 3*0) = 1 → -log σ(1); neg logit 0 → log 2
    rec = math.log(1 + math.exp(-1)) + math.log(2)
    assert parts["rec"].item() == pytest.approx(rec, rel=1e-6)
    assert parts["matching"].item() == pytest.approx((0 + 1) / 2, rel=1e-6)  # pos (0, 1)² mean; neg 0
    assert parts["item_recon"].item() == pytest.approx((1 + 1) / 2, rel=1e-6)
    assert parts["text_recon"].item() == pytest.approx((0 + 1) / 2 + 1.0, rel=1e-6)
    expected = rec + 0.5 + 0.5 * 1.0 + 0.2 * 1.5
    assert parts["loss"].item() == pytest.approx(expected, rel=1e-6)


def test_lm_loss_by_hand() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    expected = (-math.log(3 / 4) + math.log(2)) / 2
    assert lm_loss(logits, torch.tensor([1, 0])).item() == pytest.approx(expected, rel=1e-6)


def test_prompt_has_one_user_marker_then_history_and_candidate_markers() -> None:
    text = allmrec_prompt(["A", "B"], ["C", "D", "E"], ALLMRecPromptConfig())
    assert text.startswith(f"{ALLMREC_USER} is a user representation. This user has watched ")
    assert text.count(ALLMREC_USER) == 1 and text.count(ALLMREC_ITEM) == 5
    assert [text.index(f'"{t}"{ALLMREC_ITEM}') for t in "ABCDE"] == sorted(
        text.index(f'"{t}"{ALLMREC_ITEM}') for t in "ABCDE"
    )
    assert "to watch next from the following movie title set" in text
    assert text.endswith("The recommendation is")


def test_soft_rows_land_at_the_markers() -> None:
    enc = make_encoder()
    histories, candidates = [[1, 2, 3, 4], [5]], [[6, 7, 8], [1, 2, 3]]
    with torch.no_grad():
        batch, labels = enc.recommendation_batch(histories, candidates)
        users = enc.stage2.user_rows(enc.cf_users(histories))
        items = enc.item_rows([2, 3, 4, 6, 7, 8, 5, 1, 2, 3])  # history tail (3) then candidates, per prompt
        plain = enc.embedding(batch.input_ids)
    assert labels is None
    user_at = batch.input_ids == enc.special[ALLMREC_USER]
    item_at = batch.input_ids == enc.special[ALLMREC_ITEM]
    assert user_at.sum() == 2 and item_at.sum() == 10
    torch.testing.assert_close(batch.inputs_embeds[user_at], users)
    torch.testing.assert_close(batch.inputs_embeds[item_at], items)
    other = ~(user_at | item_at)
    torch.testing.assert_close(batch.inputs_embeds[other], plain[other])


def test_cold_items_take_the_text_latent() -> None:
    enc = make_encoder(cold=[3])
    s1 = enc.stage1
    ids = torch.tensor([2, 3])
    latents = s1.item_latents(ids)
    torch.testing.assert_close(latents[0], s1.item_ae.encode(s1.cf_item_emb[2]))
    torch.testing.assert_close(latents[1], s1.text_ae.encode(s1.text_emb[3]))
    with torch.no_grad():
        s1.cf_item_emb[3] += 5.0  # the untrained CF row of a cold item changes nothing
        torch.testing.assert_close(s1.item_latents(ids), latents)
        s1.text_emb[3] += 1.0
        assert not torch.allclose(s1.item_latents(ids)[1], latents[1])


def test_labels_cover_only_the_target_title_and_eos() -> None:
    enc = make_encoder()
    histories, candidates, targets = [[1, 2], [3]], [[4, 5], [6, 7]], [5, 7]
    batch, labels = enc.recommendation_batch(histories, candidates, targets)
    for b, target in enumerate(targets):
        row = labels[b][labels[b] != IGNORE].tolist()
        assert row == enc.target_ids(target)
        assert enc.tokenizer.decode(row[:-1]) == ' "' + TITLES[target - 1] + '"' and row[-1] == enc.eos_id
        assert labels[b, -len(row) :].tolist() == row  # the target is the end of the sequence
    logits, tokens = target_logits(enc.llm, batch, labels)
    full = enc.llm(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
    ).logits
    where = labels[:, 1:] != IGNORE
    expected = F.cross_entropy(full[:, :-1][where], labels[:, 1:][where])
    torch.testing.assert_close(enc.loss(histories, candidates, targets), expected)
    assert tokens.tolist() == [t for target in targets for t in enc.target_ids(target)]
    torch.testing.assert_close(logits, full[:, :-1][where])


def test_packed_likelihoods_equal_scoring_each_sequence_alone() -> None:
    enc = make_encoder()
    histories, candidates = [[1, 2, 3], [4]], [[5, 6, 1, 8], [2, 3, 7]]  # prompts of different lengths
    with torch.no_grad():
        result = [enc.candidate_logprobs([h], [c]) for h, c in zip(histories, candidates, strict=True)]
        batch, _ = enc.recommendation_batch(histories, candidates)
        conts = [[enc.target_ids(c) for c in row] for row in candidates]
        packed = continuation_logprobs(enc.llm, batch, conts, 0)
        batch, _ = enc.recommendation_batch(histories, candidates)  # the cache is consumed: build again
        chunked = continuation_logprobs(enc.llm, batch, conts, 0, max_pack=2, rows_per_forward=1)
        for (a, n), (b, m) in zip(packed, chunked, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
            assert n.tolist() == m.tolist()
        ragged = enc.candidate_rows(histories, candidates)  # the service's call: one batch, ragged rows
        for (a, n), (b, m) in zip(packed, ragged, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
            assert n.tolist() == m.tolist()
        for b, row in enumerate(candidates):
            for j, cand in enumerate(row):
                alone, labels = enc.recommendation_batch([histories[b]], [row], [cand])
                logits, tokens = target_logits(enc.llm, alone, labels)
                ref = torch.log_softmax(logits, -1).gather(1, tokens[:, None]).sum()
                assert packed[b][0][j].item() == pytest.approx(ref.item(), abs=1e-4)
                assert packed[b][1][j].item() == len(enc.target_ids(cand))
                assert result[b][0][0, j].item() == pytest.approx(ref.item(), abs=1e-4)


def sensitive_llm():
    """The tiny Llama with its matrices scaled up: a random model that reacts to its soft tokens."""
    llm = tiny_llm(seed=3)
    with torch.no_grad():
        for p in llm.model.parameters():
            if p.dim() == 2:
                p.mul_(20)
    return llm


def test_a_candidate_made_more_likely_scores_higher() -> None:
    enc = make_encoder(sensitive_llm(), seed=1)
    history, cands = [[1, 2, 3]], [[4, 5, 6, 7]]
    with torch.no_grad():
        before = enc.candidate_logprobs(history, cands)[0][0]
    j = int(before.argmin())  # the least likely candidate becomes the training target
    opt = torch.optim.Adam(enc.stage2.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        enc.loss(history, cands, [cands[0][j]]).backward()
        opt.step()
    with torch.no_grad():
        after = enc.candidate_logprobs(history, cands)[0][0]

    def margin(scores: torch.Tensor) -> float:
        return float(scores[j] - torch.cat([scores[:j], scores[j + 1 :]]).max())

    assert margin(after) > margin(before) + 5.0
    assert int((after > after[j]).sum()) < int((before > before[j]).sum())  # its rank improved


def test_greedy_generation_matches_step_by_step_argmax() -> None:
    enc = make_encoder()
    histories, candidates = [[1, 2, 3], [4]], [[5, 6], [7, 8]]
    with torch.no_grad():
        batch, _ = enc.recommendation_batch(histories, candidates)
        fast = greedy_generate(enc.llm, batch, 5, [], 0)
        for b in range(2):
            alone, _ = enc.recommendation_batch([histories[b]], [candidates[b]])
            embeds, tokens = alone.inputs_embeds, []
            for _ in range(5):
                logits = enc.llm(inputs_embeds=embeds).logits[0, -1]
                tokens.append(int(logits.argmax()))
                embeds = torch.cat([embeds, enc.embedding(torch.tensor([[tokens[-1]]]))], dim=1)
            assert fast[b] == tokens


def test_generation_stops_at_stop_rule() -> None:
    enc = make_encoder()
    with torch.no_grad():
        batch, _ = enc.recommendation_batch([[1, 2]], [[3, 4]])
        rows = greedy_generate(enc.llm, batch, 6, [], 0, stop_when=lambda r: len(r) >= 2)
    assert len(rows[0]) == 2


def test_title_matching_and_parsing() -> None:
    titles = ["Star Wars (1977)", "Heat", "Se7en"]
    assert match_candidate("Heat", titles) == 1
    assert match_candidate("star wars 1977", titles) == 0  # normalised
    assert match_candidate("Alien", titles) is None
    assert match_candidate("", titles) is None
    assert normalise_title("Se7en!") == "se7en"
    assert parse_generated_title(' "Heat"\nmore') == "Heat"
    assert parse_generated_title('to watch "Se7en" next') == "Se7en"
    assert parse_generated_title(' "Unclosed') == "Unclosed"
    assert parse_generated_title("no quotes ") == "no quotes"


def test_continuations_need_left_padding_and_tokens() -> None:
    enc = make_encoder()
    with torch.no_grad():
        batch, _ = enc.recommendation_batch([[1], [2, 3]], [[4], [5]])
        with pytest.raises(ValueError, match="at least one token"):
            continuation_logprobs(enc.llm, batch, [[[]], [[5]]], 0)
        with pytest.raises(ValueError, match="continuation lists"):
            continuation_logprobs(enc.llm, batch, [[[5]]], 0)
    with pytest.raises(ValueError, match="history"):
        enc.recommendation_prompts([[]], [[1]])
    with pytest.raises(ValueError, match="unknown item"):
        enc.title(N + 1)


def test_stage1_tables_refuse_a_wrong_shape() -> None:
    s1 = ALLMRecStage1(Stage1Config(3, d_cf=4, d_text=5, latent=2))
    with pytest.raises(ValueError, match="cf_item_emb"):
        s1.set_tables(torch.zeros(3, 4), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="sizes"):
        Stage1Config(0)


def test_imputed_cf_decodes_the_text_latent_for_every_item() -> None:
    """A cold item's CF embedding is predicted from its text: the item decoder on the text encoder's latent,
    the same for every row of imputed_table (warm items too: it never reads the CF table)."""
    torch.manual_seed(0)
    s1 = ALLMRecStage1(Stage1Config(3, d_cf=4, d_text=5, latent=2))
    s1.set_tables(torch.randn(4, 4), torch.randn(4, 5), torch.tensor([False, False, True, False]))
    ids = torch.tensor([2, 3])
    expected = s1.item_ae.dec(torch.sigmoid(s1.text_ae.enc(s1.text_emb[ids])))
    torch.testing.assert_close(s1.imputed_cf(ids), expected)
    table = s1.imputed_table()
    assert table.shape == (4, 4) and not table.requires_grad
    torch.testing.assert_close(table[ids], expected.detach())
    s1.cf_item_emb.mul_(0.0)  # the CF table plays no part
    torch.testing.assert_close(s1.imputed_table(), table)


@pytest.mark.slow
def test_packed_likelihood_on_smollm2() -> None:
    """The 4D packed mask through the real model's attention gives the per-sequence log-likelihoods."""
    from training.common.llm import load_llm

    llm = load_llm("smollm2", dtype="float32")
    enc = make_encoder(llm)
    histories, candidates = [[1, 2, 3], [4, 5]], [[6, 7, 8], [1, 2, 3]]
    with torch.no_grad():
        sums, _ = enc.candidate_logprobs(histories, candidates)
        for b, row in enumerate(candidates):
            for j, cand in enumerate(row):
                alone, labels = enc.recommendation_batch([histories[b]], [row], [cand])
                logits, tokens = target_logits(enc.llm, alone, labels)
                ref = torch.log_softmax(logits, -1).gather(1, tokens[:, None]).sum()
                assert sums[b, j].item() == pytest.approx(ref.item(), abs=2e-3)
    assert np.isfinite(sums.numpy()).all()
