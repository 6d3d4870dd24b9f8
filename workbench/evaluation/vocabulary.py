"""Word salad: the share of an answer's words that no dictionary holds.

Loops, lists that cycle and symbol or letter salad are seen by the guard's
character measures (`workbench.evaluation.quality`); an answer made of invented
words ("Hindi A Adindi, FULL INLINING A LINULLING A FORTULLING") is not: its
characters are ordinary letters and nothing repeats. Such an answer is mostly
words that are in no dictionary. The dictionaries are pyspellchecker's English,
French, Spanish and German word lists (the languages the bundled instructions ask
for), loaded once, on first use. Code is not read: fenced blocks and inline
backtick spans are dropped first, since identifiers are not words.
"""

from __future__ import annotations

import functools
import re

LANGUAGES = ("en", "fr", "es", "de")

# Words of three or more letters: "a", "I", "of" are in every list and say nothing.
_WORD = re.compile(r"[^\W\d_]{3,}")
_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.S)


@functools.cache
def _dictionaries() -> tuple[dict[str, int], ...]:
    # Imported here: loading the four lists takes about a second, paid on first use.
    from spellchecker import SpellChecker

    return tuple(SpellChecker(language=lang).word_frequency.dictionary for lang in LANGUAGES)


def dictionary_words(text: str) -> list[str]:
    """The words of `text` that `unknown_word_share` looks up: runs of three or
    more letters, outside code.

    Example:
        >>> dictionary_words("Use `np.zeros` to make a zero array.")
        ['Use', 'make', 'zero', 'array']
    """
    return _WORD.findall(_CODE.sub(" ", text))


def unknown_word_share(text: str) -> tuple[float, int]:
    """The share of `dictionary_words` in none of the `LANGUAGES` (case ignored), and
    how many words there were; ``(0.0, 0)`` for a text without any.

    Example:
        >>> unknown_word_share("Hindi A Adindi, FULL INLINING A LINULLING A FORTULLING")
        (0.6666666666666666, 6)
        >>> unknown_word_share("Le chat dort sur le canapé.")
        (0.0, 4)
        >>> unknown_word_share("Une œuvre de Monet.")
        (0.0, 3)
    """
    words = dictionary_words(text)
    if not words:
        return 0.0, 0
    known = _dictionaries()
    # The French list spells the ligatures out ("oeuvre", not "œuvre").
    looked_up = [w.lower().replace("œ", "oe").replace("æ", "ae") for w in words]
    unknown = sum(not any(w in d for d in known) for w in looked_up)
    return unknown / len(words), len(words)
