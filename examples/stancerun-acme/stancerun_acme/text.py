"""The one definition of a "word", shared by the model's tokenizer and the lexicon baseline."""

import re

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lower-cased words; punctuation is dropped ("Great!" and "great" are one word)."""
    return _WORD.findall(text.lower())
