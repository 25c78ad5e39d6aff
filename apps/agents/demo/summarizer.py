"""A deterministic extractive summarizer for the summarizer demo agent: the same text always gives the same
summary. Sentences are scored by the frequency of their content words and the best ones kept in their order."""

from __future__ import annotations

import math
import re
from collections import Counter

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
_STOPWORD_TEXT = """
    a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers him his how i if in into is it its itself just me more most my no nor not of off on once only or other our
    ours out over own same she should so some such than that the their theirs them then there these they this those
    through to too under until up very was we were what when where which while who whom why will with would you your
    yours"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if s.strip()]


def summarize(text: str, max_sentences: int | None = None) -> str:
    sentences = split_sentences(text)
    if len(sentences) <= 1:
        return sentences[0] if sentences else ""
    keep = max_sentences or max(1, math.ceil(len(sentences) / 3))
    words = [w.lower() for w in _WORD.findall(text)]
    frequency = Counter(w for w in words if w not in STOPWORDS)
    top = max(frequency.values(), default=1)

    def score(sentence: str) -> float:
        content = [w.lower() for w in _WORD.findall(sentence) if w.lower() not in STOPWORDS]
        if not content:
            return 0.0
        return sum(frequency[w] / top for w in content) / math.sqrt(len(content))

    # Ties keep the earlier sentence (index as the second key), so the result never depends on anything but text.
    ranked = sorted(range(len(sentences)), key=lambda i: (-score(sentences[i]), i))[:keep]
    return " ".join(sentences[i] for i in sorted(ranked))
