import math

import pytest

from tests.conftest import skip_unless_ci
from unimp_core.errors import UnimpError
from unimp_core.evaluation import text_metrics as tm
from unimp_core.evaluation.text_metrics import WordNet, bleu, corpus_bleu, explanation_metrics, rouge, tokenize


@pytest.fixture(scope="module")
def wordnet() -> WordNet:
    found = tm.find_wordnet()
    if found.reader is None:
        skip_unless_ci(f"no WordNet data on this machine (apt-get install wordnet-base): {found.source}")
    return found


def test_tokenize_lowercases_and_splits_on_punctuation():
    assert tokenize("Great, product!! It's_fine 10/10") == ["great", "product", "it", "s", "fine", "10", "10"]
    assert tokenize("Café crème") == ["café", "crème"]
    assert tokenize("") == [] and tokenize(None) == []


# -------------------------------------------------------------------------------------------- BLEU

def test_bleu_identical_and_disjoint():
    assert bleu(["The cat sat on the mat."], ["the cat sat on the mat"]) == {"BLEU-1": 1.0, "BLEU-4": 1.0}
    assert bleu(["dogs bark loudly at night"], ["the cat sat on the mat"]) == {"BLEU-1": 0.0, "BLEU-4": 0.0}


def test_bleu_brevity_penalty_and_missing_orders():
    # p1 = 1, c = 2 < r = 6: BP = exp(1 - 6/2); no 3-grams at all, so BLEU-4 is 0 (not nltk's 1e-78)
    m = bleu(["the cat"], ["the cat sat on the mat"])
    assert m["BLEU-1"] == pytest.approx(math.exp(-2))
    assert m["BLEU-4"] == 0.0


def test_bleu_is_pooled_over_the_corpus():
    m = bleu(["a b c d e", "x y"], ["a b c d e", "x z"])
    # p1 = (5+1)/(5+2), p2 = (4+0)/(4+1), p3 = 3/3, p4 = 2/2; c = r = 7 so BP = 1
    assert m["BLEU-1"] == pytest.approx(6 / 7)
    assert m["BLEU-4"] == pytest.approx((6 / 7 * 4 / 5) ** 0.25)


def test_bleu_empty_prediction_shortens_the_corpus():
    m = bleu(["", "a b c d"], ["x y", "a b c d"])
    assert m["BLEU-1"] == pytest.approx(math.exp(1 - 6 / 4))
    assert m["BLEU-4"] == pytest.approx(math.exp(1 - 6 / 4))
    assert bleu([""], ["a b"]) == {"BLEU-1": 0.0, "BLEU-4": 0.0}


def test_corpus_bleu_agrees_with_nltk_when_every_order_matches():
    from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

    hyps = ["the quick brown fox jumps over the lazy dog", "a small red car drives fast on the road",
            "this shirt fits well and the colour is nice"]
    refs = ["the quick brown fox leaps over the lazy dog today", "a small red car drives on the long road",
            "this shirt fits well and the color is very nice"]
    h, r = [tokenize(x) for x in hyps], [tokenize(x) for x in refs]
    for n in (1, 2, 4):
        weights = (1 / n,) * n
        assert corpus_bleu(h, r, n) == pytest.approx(nltk_corpus_bleu([[x] for x in r], h, weights=weights))


# ------------------------------------------------------------------------------------------- ROUGE

def test_rouge_hand_computed_pair():
    m = rouge(["the cat sat"], ["The cat was sat here"])
    # unigrams: P = 3/3, R = 3/5 -> F = 0.75; bigrams: 1 common of 2 and 4 -> F = 2*(1/2)(1/4)/(3/4) = 1/3;
    # LCS "the cat sat" = 3 -> F = 0.75
    assert m == pytest.approx({"ROUGE-1": 0.75, "ROUGE-2": 1 / 3, "ROUGE-L": 0.75})


def test_rouge_is_averaged_over_samples():
    m = rouge(["the cat sat", "nice shoes", ""], ["the cat was sat here", "nice shoes", "good"])
    assert m == pytest.approx({"ROUGE-1": (0.75 + 1 + 0) / 3, "ROUGE-2": (1 / 3 + 1 + 0) / 3,
                               "ROUGE-L": (0.75 + 1 + 0) / 3})


def test_text_metrics_reject_mismatched_or_empty_input():
    with pytest.raises(UnimpError, match="1 predictions for 2 references"):
        bleu(["a"], ["a", "b"])
    with pytest.raises(UnimpError, match="no explanations to score"):
        rouge([], [])


# ------------------------------------------------------------------------------------------ METEOR

def test_meteor_identical_text(wordnet):
    # 6 matches in one chunk: fmean = 1, penalty = 0.5 * (1/6)^3
    score = tm.meteor(["a b c d e f"], ["a b c d e f"], wordnet.reader)
    assert score == pytest.approx(1 - 0.5 / 6 ** 3)


def test_meteor_uses_wordnet_synonyms(wordnet):
    # "car"/"auto" share a WordNet synset: 5 matches in one chunk -> 1 - 0.5 * (1/5)^3
    assert tm.meteor(["the red car is fast"], ["the red auto is fast"], wordnet.reader) == pytest.approx(0.996)
    # "boat" is no synonym: 4 matches in 2 chunks -> fmean 0.8, penalty 0.5 * (2/4)^3
    assert tm.meteor(["the red car is fast"], ["the red boat is fast"], wordnet.reader) == pytest.approx(0.75)


def test_meteor_empty_prediction_scores_zero(wordnet):
    assert tm.meteor(["", "a b c d e f"], ["x", "a b c d e f"], wordnet.reader) == pytest.approx(
        (1 - 0.5 / 6 ** 3) / 2)


def test_system_wordnet_from_debian_folder(wordnet):
    # Debian's wordnet-base lacks `lexnames`; the reader must still name lexicographer files
    if not (tm.SYSTEM_WORDNET / "data.noun").is_file():
        skip_unless_ci("Debian package wordnet-base not installed")
    reader = tm._reader_for_folder(str(tm.SYSTEM_WORDNET.resolve()))
    assert reader.synsets("car")[0].lexname() == "noun.artifact"
    assert reader.synsets("run", pos="v")[0].lexname() == "verb.motion"
    assert reader.synsets("happy")[0].lexname() == "adj.all"


def test_wordnet_env_var_is_honoured_without_fallback(tmp_path):
    found = tm.find_wordnet({tm.WORDNET_ENV: str(tmp_path)})
    assert found.reader is None
    assert found.source.startswith("METEOR unavailable") and "data.noun" in found.source
    assert "\n" not in found.source
    missing = tm.find_wordnet({tm.WORDNET_ENV: str(tmp_path / "nope")})
    assert missing.reader is None and "is not a folder" in missing.source


def test_wordnet_env_var_pointing_at_real_data(wordnet):
    if not (tm.SYSTEM_WORDNET / "data.noun").is_file():
        skip_unless_ci("Debian package wordnet-base not installed")
    found = tm.find_wordnet({tm.WORDNET_ENV: str(tm.SYSTEM_WORDNET)})
    assert found.reader is not None and found.source == str(tm.SYSTEM_WORDNET)


# --------------------------------------------------------------------------------------- all of it

def test_explanation_metrics_without_wordnet_reports_why():
    m = explanation_metrics(["the cat sat"], ["the cat sat"], wordnet=WordNet(None, "METEOR unavailable: test"))
    assert m["METEOR"] is None and m["wordnet"] is None
    assert m["unavailable"]["METEOR"] == "METEOR unavailable: test"
    assert "BERTScore" in m["unavailable"]
    assert m["BLEU-1"] == 1.0 and m["ROUGE-L"] == 1.0 and m["samples"] == 1


def test_explanation_metrics_with_wordnet(wordnet):
    m = explanation_metrics(["a b c d e f", "x"], ["a b c d e f", "y"], wordnet=wordnet)
    assert m["METEOR"] == pytest.approx((1 - 0.5 / 6 ** 3) / 2)
    assert m["wordnet"] == wordnet.source and "METEOR" not in m["unavailable"]
    assert m["ROUGE-1"] == pytest.approx(0.5)
    assert m["BLEU-1"] == pytest.approx(6 / 7)  # 6 of 7 unigrams match, c = r
    assert set(m["definitions"]) >= {"tokenisation", "BLEU-1", "BLEU-4", "METEOR"}
