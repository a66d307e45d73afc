"""Explanation metrics for the `exp` task: BLEU-1, BLEU-4, ROUGE-1/2/L and METEOR.

All metrics share one tokenisation: lowercase, then words are the maximal runs of letters and
digits (any other character, punctuation and "_" included, separates words). Scores are in 0..1.

- BLEU-1 / BLEU-4: corpus-level BLEU (Papineni et al.; one reference per sample, brevity penalty
  over the corpus, uniform weights over 1..n-grams) with NO smoothing, the way PETER/PEPLER report
  BLEU-1/4; computed here and checked against nltk's `corpus_bleu` in the tests. (The paper's code's "BLEU"
  was the corpus unigram precision without brevity penalty; that is not BLEU-1.)
- ROUGE-1 / ROUGE-2 / ROUGE-L: F-measure per sample (`rouge_score`, no stemming, ROUGE-L = sentence
  LCS, not rougeLsum), averaged over samples.
- METEOR: `nltk.translate.meteor_score` (exact, Porter-stem and WordNet-synonym matching, alpha 0.9,
  beta 3, gamma 0.5) per sample, averaged. It needs WordNet 3.0 data, looked up in this order: the
  folder in $UNIMP_WORDNET_DIR, nltk's own data path (`corpora/wordnet`), /usr/share/wordnet (Debian
  package `wordnet-base`). Without it METEOR is None and the result says why.
- BERTScore is not computed: its model cannot be loaded offline.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections import Counter
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from ..errors import UnimpError

WORDNET_ENV = "UNIMP_WORDNET_DIR"
SYSTEM_WORDNET = Path("/usr/share/wordnet")
BERTSCORE_REASON = "BERTScore is not computed: its scoring model cannot be loaded offline"

DEFINITIONS: dict[str, str] = {
    "tokenisation": "lowercase; words are maximal runs of letters/digits, everything else separates",
    "BLEU-1": "corpus BLEU: clipped 1-gram precision times brevity penalty, no smoothing",
    "BLEU-4": "corpus BLEU: geometric mean of clipped 1..4-gram precisions times brevity penalty, no smoothing",
    "ROUGE-1": "unigram F-measure per sample (rouge_score, no stemming), mean over samples",
    "ROUGE-2": "bigram F-measure per sample (rouge_score, no stemming), mean over samples",
    "ROUGE-L": "longest-common-subsequence F-measure per sample (rouge_score rougeL), mean over samples",
    "METEOR": "nltk meteor_score (exact + Porter stem + WordNet 3.0 synonyms; alpha 0.9, beta 3, gamma 0.5), "
              "mean over samples",
}

_WORD = re.compile(r"[^\W_]+")

# WordNet's `lexnames` file (lexicographer file number, name, syntactic category), as printed in
# lexnames(5WN). nltk's reader needs it; Debian's wordnet-base ships the database without it.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
# What the METEOR path reads (index.sense and cntlist.rev are only opened for sense keys/counts).
_WORDNET_FILES = tuple(f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")) + \
    tuple(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv"))


def tokenize(text: str | None) -> list[str]:
    """Lowercased words (maximal runs of letters and digits) of `text`; [] for None/empty."""
    return _WORD.findall((text or "").lower())


class _Tokenizer:
    """Adapter giving `rouge_score` the same tokenisation as every other metric here."""

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text)


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise UnimpError(f"text metrics: {len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise UnimpError("text metrics: no explanations to score")


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hypotheses: Sequence[list[str]], references: Sequence[list[str]], max_n: int) -> float:
    """Corpus BLEU of tokenised texts with one reference each, uniform weights over 1..max_n, no smoothing.

    p_n = sum of clipped n-gram matches / sum of hypothesis n-grams over the corpus; BP = 1 if the
    corpus hypothesis length c exceeds the reference length r, else exp(1 - r/c);
    BLEU = BP * exp(mean(log p_n)). Exactly 0 when some order has no match or c = 0 (nltk's unsmoothed
    corpus_bleu returns ~1e-78 there instead; elsewhere the two agree).
    """
    matches, totals = [0] * max_n, [0] * max_n
    for hyp, ref in zip(hypotheses, references):
        for n in range(1, max_n + 1):
            ref_counts = _ngrams(ref, n)
            matches[n - 1] += sum(min(c, ref_counts[g]) for g, c in _ngrams(hyp, n).items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    hyp_len, ref_len = sum(map(len, hypotheses)), sum(map(len, references))
    if hyp_len == 0 or min(matches) == 0:  # matches <= totals, so this also covers empty orders
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1 and BLEU-4 (no smoothing, see `corpus_bleu`).

    Args:
        predictions: generated explanations, one per sample (empty strings are allowed: they add no
            n-grams and shorten the corpus, which the brevity penalty punishes).
        references: the true explanation of each sample.

    Returns:
        {"BLEU-1": float, "BLEU-4": float} in 0..1.
    """
    _check_pairs(predictions, references)
    hyps = [tokenize(p) for p in predictions]
    refs = [tokenize(r) for r in references]
    return {"BLEU-1": corpus_bleu(hyps, refs, 1), "BLEU-4": corpus_bleu(hyps, refs, 4)}


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean per-sample ROUGE-1, ROUGE-2 and ROUGE-L F-measures.

    Returns {"ROUGE-1", "ROUGE-2", "ROUGE-L": float} in 0..1.
    """
    from rouge_score.rouge_scorer import RougeScorer

    _check_pairs(predictions, references)
    names = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}
    scorer = RougeScorer(list(names), use_stemmer=False, tokenizer=_Tokenizer())
    totals = dict.fromkeys(names, 0.0)
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)  # (target, prediction)
        for key in names:
            totals[key] += scores[key].fmeasure
    return {label: totals[key] / len(predictions) for key, label in names.items()}


class WordNet(NamedTuple):
    """Result of the WordNet lookup: a reader, or None with the reason in `source`."""

    reader: Any  # nltk WordNetCorpusReader or None
    source: str  # where the data came from, or why there is none


def _missing_files(folder: Path) -> list[str]:
    return [name for name in _WORDNET_FILES if not (folder / name).is_file()]


def _lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{_POS_NUMBER[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES))


@lru_cache(maxsize=None)
def _reader_for_folder(folder: str):
    """An nltk WordNetCorpusReader on a WordNet 3.0 database folder; serves `lexnames` if it is absent.

    nltk (>= 3.10) only reads files under its data roots, so the folder is appended to
    `nltk.data.path` (nltk's documented way to allow a folder; it adds no corpus to nltk's lookups).
    """
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    has_lexnames = (Path(folder) / "lexnames").is_file()

    class _Reader(WordNetCorpusReader):
        def open(self, file):
            # Debian's wordnet-base lacks this fixed 45-line table; symlinking it in from elsewhere
            # fails nltk's symlink-escape check, so it is served from memory.
            if file == "lexnames" and not has_lexnames:
                return io.StringIO(_lexnames_text())
            return super().open(file)

        def map_wn(self, version="wordnet"):
            # nltk maps WordNet 3.0 synset ids onto the loaded version for its multilingual (OMW)
            # data and reads its own "wordnet" corpus for that; this data is 3.0 and OMW is unused.
            return None

    if folder not in [str(p) for p in nltk.data.path]:
        nltk.data.path.append(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed here
        return _Reader(folder, None)


def _from_folder(folder: Path, label: str) -> WordNet:
    if not folder.is_dir():
        return WordNet(None, f"{label} {folder} is not a folder")
    missing = _missing_files(folder)
    if missing:
        return WordNet(None, f"{label} {folder} lacks WordNet files: {', '.join(missing)}")
    try:
        return WordNet(_reader_for_folder(str(folder.resolve())), str(folder))
    except Exception as exc:  # a corrupt database must disable METEOR, not the whole evaluation
        return WordNet(None, f"{label} {folder} could not be read by nltk: {' '.join(str(exc).split())}")


def find_wordnet(environ: dict[str, str] | None = None) -> WordNet:
    """Find WordNet data for METEOR: $UNIMP_WORDNET_DIR, then nltk's data path, then /usr/share/wordnet.

    Args:
        environ: the environment to read UNIMP_WORDNET_DIR from (default os.environ). When the
            variable is set, only that folder is tried: an explicit choice must not silently fall back.

    Returns:
        WordNet(reader, source) with a loaded reader, or WordNet(None, reason).
    """
    environ = os.environ if environ is None else environ
    if environ.get(WORDNET_ENV):
        found = _from_folder(Path(environ[WORDNET_ENV]), f"${WORDNET_ENV}")
        return found if found.reader is not None else WordNet(None, f"METEOR unavailable: {found.source}")
    try:
        import nltk

        location = nltk.data.find("corpora/wordnet")
    except (ImportError, LookupError):
        location = None
    if location is not None:
        try:
            from nltk.corpus import wordnet

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wordnet.ensure_loaded()
            return WordNet(wordnet, f"nltk data {location}")
        except Exception:  # fall through to the system copy
            pass
    found = _from_folder(SYSTEM_WORDNET, "system WordNet")
    if found.reader is None:
        return WordNet(None, f"METEOR unavailable: no WordNet data (set ${WORDNET_ENV}, install nltk's wordnet "
                             f"corpus, or the Debian package wordnet-base; {found.source})")
    return found


def meteor(predictions: Sequence[str], references: Sequence[str], wordnet: Any) -> float:
    """Mean per-sample METEOR (nltk) with the given WordNet reader. Returns a float in 0..1."""
    from nltk.translate.meteor_score import meteor_score

    _check_pairs(predictions, references)
    total = 0.0
    for pred, ref in zip(predictions, references):
        hyp = tokenize(pred)
        # nltk divides by the hypothesis length; an empty hypothesis matches nothing
        total += meteor_score([tokenize(ref)], hyp, wordnet=wordnet) if hyp else 0.0
    return total / len(predictions)


def explanation_metrics(predictions: Sequence[str], references: Sequence[str],
                        wordnet: WordNet | None = None) -> dict:
    """All explanation metrics for paired generated / true explanations.

    Args:
        predictions: generated explanations (rating token already removed).
        references: true explanations.
        wordnet: a `find_wordnet()` result; looked up when None.

    Returns:
        {"BLEU-1", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L": float, "METEOR": float or None,
         "samples": int, "wordnet": source or None, "unavailable": {metric: reason},
         "definitions": DEFINITIONS}.
    """
    _check_pairs(predictions, references)
    wordnet = find_wordnet() if wordnet is None else wordnet
    out: dict[str, Any] = {**bleu(predictions, references), **rouge(predictions, references)}
    unavailable = {"BERTScore": BERTSCORE_REASON}
    if wordnet.reader is None:
        out["METEOR"] = None
        unavailable["METEOR"] = wordnet.source
    else:
        out["METEOR"] = meteor(predictions, references, wordnet.reader)
    out.update(samples=len(predictions), wordnet=wordnet.source if wordnet.reader is not None else None,
               unavailable=unavailable, definitions=dict(DEFINITIONS))
    return out
