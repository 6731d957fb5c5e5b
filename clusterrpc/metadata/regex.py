"""The regular expressions a field may carry: the subset Python's :mod:`re` and ECMA-262
(JavaScript, what JSON Schema's ``pattern`` and a browser's form use) read the same way.

A pattern is always **full-matched** (:func:`fullmatch`; JSON Schema gets ``^(?:…)$``) and
compiled with :data:`re.ASCII`. :func:`check_regex` tokenizes it and refuses, with the
construct and its position, everything whose meaning differs between the two or exists in
only one:

* ``.`` (Python's matches ``\\r``, ECMA-262's does not) and ``^``/``$`` (Python's ``$`` also
  matches before a final newline; with a full match they are not needed);
* ``\\s``/``\\S`` (ECMA-262's include Unicode spaces) and every escape but ``\\d \\D \\w \\W
  \\b \\B \\t \\n \\r \\f \\v``, ``\\xHH``, ``\\uHHHH``, back-references ``\\1``-``\\9`` and
  escaped syntax characters ``\\^ \\$ \\\\ \\. \\* \\+ \\? \\( \\) \\[ \\] \\{ \\} \\| \\/``
  (and ``\\-`` in a class) — so ``\\A``, ``\\Z``, ``\\z``, ``\\p{…}``, ``\\h``, ``\\k<…>``,
  ``\\0`` are out;
* every group but ``(…)``, ``(?:…)``, ``(?=…)`` and ``(?!…)`` — lookbehind, named groups,
  inline flags, atomic groups, conditionals and comments are out;
* possessive quantifiers (``*+``), ``{,n}``, and a literal ``{`` or ``}``;
* in classes: a leading ``]``, nested ``[``, set operations (``&&``, ``--``, ``||``, ``~~``)
  and POSIX classes (``[:alpha:]``).

What remains — literals, classes, alternation, groups, lookahead, greedy and lazy
quantifiers, back-references — means the same in both.
"""

from __future__ import annotations

import re
from typing import Final

from clusterrpc.errors import ConfigurationError

__all__ = ["check_regex", "compile_regex", "fullmatch"]

_ESCAPES: Final = frozenset("dDwWbBtnrfv")
_SYNTAX: Final = frozenset("^$\\.*+?()[]{}|/")
_QUANTIFIER = re.compile(r"\{[0-9]+(,[0-9]*)?\}")
_MAX_PATTERN = 4096


def _refuse(pattern: str, index: int, what: str, where: str) -> ConfigurationError:
    prefix = f"{where}: " if where else ""
    return ConfigurationError(f"{prefix}regex {pattern!r}: {what} at position {index} is not "
                              "in the subset Python and ECMA-262 share (spec/metadata.md)")


def _escape(pattern: str, index: int, where: str, *, in_class: bool) -> int:
    """Check the escape at ``pattern[index] == '\\\\'``; return the index after it."""
    if index + 1 >= len(pattern):
        raise _refuse(pattern, index, "a trailing backslash", where)
    char = pattern[index + 1]
    if char in _ESCAPES or char in _SYNTAX or (in_class and char == "-"):
        return index + 2
    if char in "123456789" and not in_class:
        return index + 2
    if char == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", pattern[index + 2:index + 4]):
        return index + 4
    if char == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", pattern[index + 2:index + 6]):
        return index + 6
    raise _refuse(pattern, index, f"the escape \\{char}", where)


def _class(pattern: str, index: int, where: str) -> int:
    """Check the class opening at ``pattern[index] == '['``; return the index after it."""
    start = index
    index += 1
    if pattern.startswith("^", index):
        index += 1
    if pattern.startswith("]", index):
        raise _refuse(pattern, index, "a ']' first in a class", where)
    while index < len(pattern):
        char = pattern[index]
        if char == "]":
            return index + 1
        if char == "\\":
            index = _escape(pattern, index, where, in_class=True)
            continue
        if char == "[":
            raise _refuse(pattern, index, "'[' in a class (nested sets, [:posix:])", where)
        pair = pattern[index:index + 2]
        if pair in ("&&", "--", "||", "~~"):
            raise _refuse(pattern, index, f"the set operation {pair!r}", where)
        index += 1
    raise _refuse(pattern, start, "an unterminated class", where)


def check_regex(pattern: str, *, where: str = "") -> None:
    """Raise :class:`~clusterrpc.errors.ConfigurationError` unless ``pattern`` is in the
    shared subset (module docstring) and compiles; ``where`` prefixes the message."""
    if not isinstance(pattern, str) or len(pattern) > _MAX_PATTERN:
        raise ConfigurationError(f"{where}: a regex is a string of at most {_MAX_PATTERN} "
                                 "characters")
    index, after_atom = 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index, after_atom = _escape(pattern, index, where, in_class=False), True
        elif char == "[":
            index, after_atom = _class(pattern, index, where), True
        elif char == "(":
            if pattern.startswith("(?", index):
                if pattern[index + 2:index + 3] not in (":", "=", "!"):
                    raise _refuse(pattern, index, f"the group {pattern[index:index + 4]!r}…",
                                  where)
                index += 3
            else:
                index += 1
            after_atom = False
        elif char in ")|":
            index, after_atom = index + 1, char == ")"
        elif char in "*+?":
            if not after_atom:
                raise _refuse(pattern, index, f"a quantifier {char!r} with nothing to repeat",
                              where)
            index += 1
            if pattern.startswith("+", index):
                raise _refuse(pattern, index, "a possessive quantifier", where)
            if pattern.startswith("?", index):
                index += 1  # lazy: the same in both
            after_atom = False
        elif char == "{":
            match = _QUANTIFIER.match(pattern, index)
            if match is None or not after_atom:
                raise _refuse(pattern, index, "a literal '{' (escape it: \\{)", where)
            index = match.end()
            if pattern.startswith("+", index):
                raise _refuse(pattern, index, "a possessive quantifier", where)
            if pattern.startswith("?", index):
                index += 1
            after_atom = False
        elif char == "}":
            raise _refuse(pattern, index, "a literal '}' (escape it: \\})", where)
        elif char == ".":
            raise _refuse(pattern, index, "'.' (it matches \\r in Python only: write [^\\n\\r] "
                          "or the characters you mean)", where)
        elif char in "^$":
            raise _refuse(pattern, index, f"the anchor {char!r} (patterns are full-matched)",
                          where)
        else:
            index, after_atom = index + 1, True
    try:
        re.compile(pattern, re.ASCII)
    except re.error as error:
        raise ConfigurationError(f"{where + ': ' if where else ''}regex {pattern!r} does not "
                                 f"compile: {error}") from None


def compile_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` checked (:func:`check_regex`) and compiled with :data:`re.ASCII`."""
    check_regex(pattern)
    return re.compile(pattern, re.ASCII)


def fullmatch(pattern: str, text: str) -> bool:
    """Whether all of ``text`` matches ``pattern`` (which must pass :func:`check_regex`)."""
    return re.fullmatch(pattern, text, re.ASCII) is not None
