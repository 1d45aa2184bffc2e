"""Regular expressions a client may put in a cluster query: only those that run in linear
time on a backtracking engine.

MongoDB matches ``$regex`` with PCRE and the embedded server with Python's ``re``: both
backtrack, and neither can be interrupted inside one match (a server-side time limit is
checked between documents, not within one). A pattern such as ``^(a+)+$`` takes twice as
long for every extra character of the value it is tried on (28 characters kept the
embedded server busy for 10 s, stalling every other request). Being valid in a linear-time
syntax such as RE2's does not help: ``^(a+)+$`` is valid RE2, and RE2 is not the engine
that runs it. So a pattern is parsed here into a small grammar and accepted only if its
backtracking is provably bounded:

- single characters, ``.``, character classes ``[...]`` and the escapes ``\\d \\w \\s``
  (and their negations), ``\\t \\n \\r \\f \\v`` and escaped punctuation; the anchors
  ``^ $ \\A \\Z \\b \\B``; groups ``(...)`` and ``(?:...)``; alternation ``|``;
- quantifiers ``* + ? {n} {n,} {n,m}`` (counts up to 100; lazy ``?`` allowed) only on one
  character, class or escape, never on a group (a repeated group is how exponential
  patterns are written), except ``?`` on a group that repeats nothing inside;
- no backreferences, lookarounds, named groups, inline flags, atomic or possessive forms,
  conditionals, and none of ``$options`` but ``i``, ``m`` and ``s``;
- at one position of the value, at most 16 ways through the pattern (alternatives and
  bounded repeats multiply: ``(a|a)(a|a)...`` is refused when it exceeds that);
- no unbounded repeat (``* + {n,}``, or ``{n,m}`` of more than 16 choices) after another
  one that can end at several places: each scans the value once for every place the one
  before can end (``^a*a*x`` and ``^.*a.*b`` are quadratic). A repeat followed by a
  character it cannot match (``[a-z]+-``) ends at one place only (``^[a-z]+-[0-9]+$`` is
  fine);
- a pattern with any unbounded repeat must be anchored at the start (``^`` without the
  ``m`` option, or ``\\A``): unanchored, the engine retries it from every character, which
  is quadratic again. To find text anywhere, leave out the ``.*`` (``abc``, not ``.*abc.*``).

The work of one match is then linear in the length of the value it is tried on: at most
16 ways through a pattern of at most 256 characters, from each character of the value
(measured with Python's ``re``: about 0.5 s for a 400,000-character value at the limits,
microseconds for values of ordinary length). Between documents the server's time limit
(maxTimeMS) stops a query that runs too long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_PATTERN_LENGTH = 256
MAX_CHOICES = 16
# {n,m} with more choices than this is treated like an unbounded repeat.
MAX_BOUNDED_CHOICES = 16
MAX_REPEAT = 100
OPTIONS = frozenset("ims")

_CLASS_ESCAPES = frozenset("dDwWsS")
_CONTROL_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v"}
_REPEAT = re.compile(r"\{(\d+)(,(\d*))?\}")
_GROUP_EXTENSIONS = {
    "(?=": "lookahead", "(?!": "lookahead", "(?<=": "lookbehind", "(?<!": "lookbehind",
    "(?P": "named group", "(?<": "named group", "(?>": "atomic group", "(?(": "conditional",
    "(?#": "comment",
}


class UnsafeRegex(ValueError):
    """The pattern or its options are outside the grammar above; the message says why."""


@dataclass
class _Item:
    kind: str  # "char" (one character, class or escape), "start", "anchor", "group"
    source: str = ""
    alternatives: list[list[_Item]] = field(default_factory=list)
    low: int = 1
    high: int | None = 1  # None: unbounded
    literal: str | None = None  # the one character a plain literal item matches

    @property
    def unbounded(self) -> bool:
        return self.high is None or self.high - self.low + 1 > MAX_BOUNDED_CHOICES


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.pos = 0

    def parse(self) -> list[list[_Item]]:
        alternatives = self._alternatives()
        if self.pos < len(self.pattern):
            raise UnsafeRegex(f"unbalanced ')' at position {self.pos}")
        return alternatives

    def _peek(self, length: int = 1) -> str:
        return self.pattern[self.pos:self.pos + length]

    def _alternatives(self) -> list[list[_Item]]:
        alternatives: list[list[_Item]] = [[]]
        while self.pos < len(self.pattern) and self._peek() != ")":
            if self._peek() == "|":
                alternatives.append([])
                self.pos += 1
                continue
            item = self._atom()
            self._quantifier(item)
            alternatives[-1].append(item)
        return alternatives

    def _atom(self) -> _Item:
        char = self._peek()
        if char == "(":
            return self._group()
        if char == "[":
            return _Item("char", self._class())
        if char == "\\":
            return self._escape()
        if char in "*+?" or (char == "{" and _REPEAT.match(self.pattern, self.pos)):
            raise UnsafeRegex(
                f"{char!r} at position {self.pos} repeats nothing (a quantifier may follow "
                "only a character, a class or an escape, once)"
            )
        if char == "{":
            raise UnsafeRegex(f"a literal '{{' (position {self.pos}) must be escaped as \\{{")
        self.pos += 1
        if char == "^":
            return _Item("start", char)
        if char == "$":
            return _Item("anchor", char)
        return _Item("char", char, literal=None if char == "." else char)

    def _group(self) -> _Item:
        start = self.pos
        if self._peek(3) == "(?:":
            self.pos += 3
        elif self._peek(2) == "(?":
            kind = next((name for prefix, name in _GROUP_EXTENSIONS.items()
                         if self.pattern.startswith(prefix, start)), "inline flag")
            raise UnsafeRegex(
                f"{kind}s are not allowed (position {start}); only (...) and (?:...) groups"
                + ("; give flags in $options" if kind == "inline flag" else "")
            )
        else:
            self.pos += 1
        alternatives = self._alternatives()
        if self._peek() != ")":
            raise UnsafeRegex(f"unbalanced '(' at position {start}")
        self.pos += 1
        return _Item("group", self.pattern[start:self.pos], alternatives)

    def _class(self) -> str:
        start = self.pos
        self.pos += 1
        if self._peek() == "^":
            self.pos += 1
        if self._peek() == "]":
            self.pos += 1
        while self.pos < len(self.pattern) and self._peek() != "]":
            char = self._peek()
            if char == "\\":
                escaped = self.pattern[self.pos + 1:self.pos + 2]
                if not escaped:
                    break
                if escaped.isalnum() and escaped not in _CLASS_ESCAPES | set(_CONTROL_ESCAPES):
                    raise UnsafeRegex(f"the escape \\{escaped} is not allowed in a class "
                                      f"(position {self.pos})")
                self.pos += 2
                continue
            if char == "[":
                raise UnsafeRegex(f"'[' inside a character class (position {self.pos}) must "
                                  "be escaped as \\[")
            self.pos += 1
        if self._peek() != "]":
            raise UnsafeRegex(f"unterminated character class at position {start}")
        self.pos += 1
        return self.pattern[start:self.pos]

    def _escape(self) -> _Item:
        escaped = self.pattern[self.pos + 1:self.pos + 2]
        source = self.pattern[self.pos:self.pos + 2]
        if not escaped:
            raise UnsafeRegex("the pattern ends with a lone backslash")
        self.pos += 2
        if escaped.isdigit() or escaped in "gk":
            raise UnsafeRegex(f"backreferences ({source}) are not allowed")
        if escaped in _CLASS_ESCAPES:
            return _Item("char", source)
        if escaped in _CONTROL_ESCAPES:
            return _Item("char", source, literal=_CONTROL_ESCAPES[escaped])
        if escaped == "A":
            return _Item("start", source)
        if escaped in "bBZ":
            return _Item("anchor", source)
        if escaped.isalnum():
            raise UnsafeRegex(f"the escape {source} is not allowed (position {self.pos - 2})")
        return _Item("char", source, literal=escaped)

    def _quantifier(self, item: _Item) -> None:
        char = self._peek()
        start = self.pos
        if char in ("*", "+", "?"):
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
            self.pos += 1
        elif char == "{" and (match := _REPEAT.match(self.pattern, self.pos)):
            low = int(match.group(1))
            high = low if match.group(2) is None else (
                int(match.group(3)) if match.group(3) else None)
            if low > MAX_REPEAT or (high or 0) > MAX_REPEAT:
                raise UnsafeRegex(f"repeat counts above {MAX_REPEAT} are not allowed "
                                  f"(position {start})")
            if high is not None and high < low:
                raise UnsafeRegex(f"{match.group(0)} at position {start}: the maximum is "
                                  "below the minimum")
            self.pos = match.end()
        else:
            return
        if item.kind in ("start", "anchor"):
            raise UnsafeRegex(f"the anchor {item.source} cannot be repeated (position {start})")
        if item.kind == "group" and (low, high) != (0, 1):
            raise UnsafeRegex(
                f"the group {item.source} may not be repeated (position {start}): repeating "
                "a group is how patterns that take exponential time are written; repeat "
                "single characters or classes only"
            )
        if item.kind == "group" and _repeats(item.alternatives):
            raise UnsafeRegex(f"the optional group {item.source} may not repeat anything "
                              "inside it")
        if self._peek() == "?":  # lazy: the same work, in the other order
            self.pos += 1
        if self._peek() == "+":
            raise UnsafeRegex(f"possessive quantifiers are not allowed (position {self.pos})")
        item.low, item.high = low, high


def _repeats(alternatives: list[list[_Item]]) -> bool:
    return any(item.high != 1 or item.low != 1 or _repeats(item.alternatives)
               for sequence in alternatives for item in sequence)


def _ends_once(item: _Item, following: _Item | None, flags: int) -> bool:
    """Whether a repeat of ``item`` can end at one place only: it is followed by a required
    literal character that ``item`` cannot match (``[a-z]+-``)."""
    if following is None or following.kind != "char" or following.literal is None:
        return False
    if following.low < 1:
        return False
    return re.fullmatch(item.source, following.literal, flags) is None


def _choices(alternatives: list[list[_Item]]) -> int:
    """Ways through the pattern at one position, counting bounded repeats and
    alternatives (unbounded repeats are counted by _degree)."""
    total = 0
    for sequence in alternatives:
        product = 1
        for item in sequence:
            if item.kind == "group":
                ways = _choices(item.alternatives) + (1 if item.low == 0 else 0)
            elif item.kind == "char" and not item.unbounded:
                ways = (item.high or 1) - item.low + 1
            else:
                ways = 1
            product = min(product * ways, MAX_CHOICES + 1)
        total = min(total + product, MAX_CHOICES + 1)
    return total


def _degree(alternatives: list[list[_Item]], before: int, flags: int) -> tuple[int, int]:
    """The work of a match grows like the value's length to the power returned first.

    ``before`` counts the places, before this point, that can each be reached in a number
    of ways proportional to the value's length (the start of an unanchored pattern, a
    repeat that can end at several places). Every unbounded repeat scans the value once
    per way it is reached, so it costs ``before + 1``. Returns (the highest cost, ``before``
    after the alternatives)."""
    highest, after = before, before
    for sequence in alternatives:
        reached = before
        for index, item in enumerate(sequence):
            if item.kind == "group":
                inner, reached = _degree(item.alternatives, reached, flags)
                highest = max(highest, inner)
            elif item.kind == "char" and item.unbounded:
                highest = max(highest, reached + 1)
                following = sequence[index + 1] if index + 1 < len(sequence) else None
                if not _ends_once(item, following, flags):
                    reached += 1
        after = max(after, reached)
    return highest, after


def _anchored(alternatives: list[list[_Item]], multiline: bool) -> bool:
    """Whether every way through the pattern starts at the start of the value."""
    for sequence in alternatives:
        first = sequence[0] if sequence else None
        if first is None:
            return False
        if first.kind == "start" and (first.source == "\\A" or not multiline):
            continue
        if first.kind == "group" and first.low == 1 and _anchored(first.alternatives, multiline):
            continue
        return False
    return True


def check_regex(pattern: object, options: object = "") -> None:
    """Raise UnsafeRegex unless ``pattern`` with ``options`` runs in linear time."""
    if not isinstance(pattern, str):
        raise UnsafeRegex("the pattern must be a string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UnsafeRegex(
            f"pattern of {len(pattern)} characters; the limit is {MAX_PATTERN_LENGTH}"
        )
    if not isinstance(options, str) or not set(options) <= OPTIONS or len(options) > 3:
        raise UnsafeRegex(f"$options {options!r}: only i, m and s are allowed")
    flags = (re.IGNORECASE if "i" in options else 0) | (re.DOTALL if "s" in options else 0)
    alternatives = _Parser(pattern).parse()
    if _choices(alternatives) > MAX_CHOICES:
        raise UnsafeRegex(
            f"the pattern has more than {MAX_CHOICES} ways to match at one position "
            "(alternatives and repeats multiply); simplify it"
        )
    anchored = _anchored(alternatives, "m" in options)
    degree, _ = _degree(alternatives, 0 if anchored else 1, flags)
    if degree > 1 and not anchored and _degree(alternatives, 0, flags)[0] <= 1:
        raise UnsafeRegex(
            "a pattern with *, + or {n,} must start with ^ (without the m option) or \\A; "
            "to find text anywhere, leave out .* (abc, not .*abc.*)"
        )
    if degree > 1:
        raise UnsafeRegex(
            "the pattern repeats (*, +, {n,}) after a repeat that can end at several "
            "places, which takes quadratic time or worse; keep one repeat, or follow each "
            "by a character it cannot match (e.g. ^[a-z]+-[0-9]+$)"
        )
    try:
        re.compile(pattern, flags)
    except re.error as exc:
        raise UnsafeRegex(f"not a valid regular expression: {exc}") from None
