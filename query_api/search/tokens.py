"""Tokenizer of the run search language (hand-written, one pass, no regex backtracking traps).

Tokens: words (identifiers, keys such as `metrics.val/acc`, keywords), quoted keys
(`metrics.\\`val loss\\``, `params."lr"`), strings ('..' or ".." with the quote doubled to
escape it; backslashes are ordinary characters), numbers (`-1`, `0.5`, `1e-3`), the
operators `= != <> < <= > >=`, `(`, `)` and `,`. Every token records its start position.

Rule: any input either tokenizes or raises FilterSyntaxError; nothing else escapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from query_api.errors import FilterSyntaxError

MAX_LENGTH = 20_000


class Kind(Enum):
    WORD = "word"
    QUOTED_KEY = "quoted key"
    STRING = "string"
    NUMBER = "number"
    OP = "operator"
    LPAREN = "'('"
    RPAREN = "')'"
    COMMA = "','"
    END = "end of input"


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str  # WORD: the word; QUOTED_KEY: the prefix; STRING: the value; OP: the operator
    position: int
    name: str = ""  # QUOTED_KEY: the unquoted key name

    def describe(self) -> str:
        if self.kind is Kind.END:
            return "end of input"
        if self.kind is Kind.STRING:
            return "a string"
        return repr(self.text)


_WORD_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_WORD_CHARS = _WORD_START | frozenset("0123456789./:-@")
_DIGITS = frozenset("0123456789")
_SPACE = frozenset(" \t\r\n")
_OPS = ("!=", "<>", "<=", ">=", "=", "<", ">")


def tokenize(text: str) -> list[Token]:
    """Split `text` into tokens ending with one END token."""
    if len(text) > MAX_LENGTH:
        raise FilterSyntaxError(f"filter longer than {MAX_LENGTH} characters", MAX_LENGTH)
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _SPACE:
            i += 1
        elif c in _WORD_START:
            i = _word(text, i, tokens)
        elif c in _DIGITS or (c in "-." and _starts_number(text, i)):
            i = _number(text, i, tokens)
        elif c in "'\"":
            value, end = _quoted(text, i)
            tokens.append(Token(Kind.STRING, value, i))
            i = end
        elif c == "(":
            tokens.append(Token(Kind.LPAREN, c, i))
            i += 1
        elif c == ")":
            tokens.append(Token(Kind.RPAREN, c, i))
            i += 1
        elif c == ",":
            tokens.append(Token(Kind.COMMA, c, i))
            i += 1
        else:
            op = next((o for o in _OPS if text.startswith(o, i)), None)
            if op is None:
                raise FilterSyntaxError(f"unexpected character {c!r}", i)
            tokens.append(Token(Kind.OP, "!=" if op == "<>" else op, i))
            i += len(op)
    tokens.append(Token(Kind.END, "", n))
    return tokens


def _word(text: str, start: int, tokens: list[Token]) -> int:
    i = start + 1
    while i < len(text) and text[i] in _WORD_CHARS:
        i += 1
    word = text[start:i]
    if word.endswith(".") and i < len(text) and text[i] in '`"':
        name, end = _quoted(text, i)
        tokens.append(Token(Kind.QUOTED_KEY, word[:-1], start, name))
        return end
    tokens.append(Token(Kind.WORD, word, start))
    return i


def _starts_number(text: str, i: int) -> bool:
    j = i + 1 if text[i] == "-" else i
    if j < len(text) and text[j] in _DIGITS:
        return True
    return text[j : j + 1] == "." and text[j + 1 : j + 2] in _DIGITS and text[j + 1 : j + 2] != ""


def _number(text: str, start: int, tokens: list[Token]) -> int:
    i = start + 1 if text[start] == "-" else start
    i = _digits(text, i)
    if text[i : i + 1] == ".":
        i = _digits(text, i + 1)
    if text[i : i + 1] in ("e", "E"):
        j = i + 1
        if text[j : j + 1] in ("+", "-"):
            j += 1
        if text[j : j + 1] == "" or text[j] not in _DIGITS:
            raise FilterSyntaxError("malformed number exponent", i)
        i = _digits(text, j)
    if i < len(text) and text[i] in _WORD_CHARS:
        raise FilterSyntaxError(f"malformed number {text[start : i + 1]!r}", start)
    tokens.append(Token(Kind.NUMBER, text[start:i], start))
    return i


def _digits(text: str, i: int) -> int:
    while i < len(text) and text[i] in _DIGITS:
        i += 1
    return i


def _quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted run starting at `start`; a doubled quote stands for one quote."""
    quote = text[start]
    parts: list[str] = []
    i = start + 1
    while True:
        j = text.find(quote, i)
        if j < 0:
            raise FilterSyntaxError(f"unterminated {quote}-quoted text", start)
        parts.append(text[i:j])
        if text[j + 1 : j + 2] == quote:
            parts.append(quote)
            i = j + 2
        else:
            return "".join(parts), j + 1
