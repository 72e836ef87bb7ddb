"""The official SQuAD v1.1 metric: normalised exact match and token F1, max over gold answers."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse white space (as the official script)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    predicted = normalize_answer(prediction).split()
    truth = normalize_answer(gold).split()
    common = Counter(predicted) & Counter(truth)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted)
    recall = overlap / len(truth)
    return 2 * precision * recall / (precision + recall)


def score(gold: Mapping[str, Iterable[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """EM and F1 in percent over every gold question; an unanswered question scores zero."""
    em = f1 = 0.0
    for qid, answers in gold.items():
        answers = list(answers)
        if qid not in predictions:
            continue
        em += max(exact_match(predictions[qid], a) for a in answers)
        f1 += max(f1_score(predictions[qid], a) for a in answers)
    n = len(gold)
    return {"exact_match": 100.0 * em / n if n else 0.0, "f1": 100.0 * f1 / n if n else 0.0, "n": n}
