"""Compositional formulas: the grammar of compositional explanations (Mu & Andreas 2020, with
Harth's spatial connectors), as text and as JSON trees.

A formula is a primitive's name (a leaf) or a tuple (connector, left, right). Connectors, with
A's mask on the left and B's on the right (their masks: netunits.methods.formula_masks):
  OR, AND, AND NOT   set operations per position;
  WITH               A's mask on the images where B is present anywhere;
  CLOSE TO           A's positions near a position of B;
  CLOSE              (A CLOSE TO B) OR (B CLOSE TO A).
An expanded primitive is named `<name>-X`.

Text: `(hole OR endpoint) AND NOT thick_stroke` (to_string / parse). JSON: a leaf is its name,
a node {"op": connector, "left": tree, "right": tree} (to_json / from_json), so a formula can be
stored and read back without parsing text.
"""
from __future__ import annotations

import re
from typing import Any, Union

from netunits.errors import PipelineError

Formula = Union[str, tuple]

CONNECTORS = ("OR", "AND", "AND NOT", "WITH", "CLOSE TO", "CLOSE")
COMMUTATIVE = ("OR", "AND", "CLOSE")
EXPANDED = "-X"
KEYWORDS = {"OR", "AND", "NOT", "WITH", "CLOSE", "TO"}
BARE_NAME = re.compile(r"[\w.\-/']+")
TOKEN = re.compile(r'\s*(?:(\()|(\))|"([^"]+)"|([\w.\-/\']+)|(\S))')


def leaves(formula: Formula) -> list[str]:
    if isinstance(formula, str):
        return [formula]
    return leaves(formula[1]) + leaves(formula[2])


def formula_length(formula: Formula) -> int:
    """The number of leaves (compexp's length)."""
    return len(leaves(formula))


def _name_text(name: str) -> str:
    return name if BARE_NAME.fullmatch(name) and name.upper() not in KEYWORDS else f'"{name}"'


def to_string(formula: Formula, outer: bool = True) -> str:
    """`(hole OR endpoint) AND NOT thick_stroke`: nested formulas in parentheses; names that are
    not plain words (spaces, keywords) in double quotes."""
    if isinstance(formula, str):
        return _name_text(formula)
    text = f"{to_string(formula[1], False)} {formula[0]} {to_string(formula[2], False)}"
    return text if outer else f"({text})"


def parse(text: str) -> Formula:
    """The formula a string of to_string's syntax names; connectors of one level read left to
    right: `A OR B AND C` is `(A OR B) AND C`."""
    tokens = []
    for match in TOKEN.finditer(text):
        opening, closing, quoted, word, other = match.groups()
        if other:
            raise PipelineError(f"formula {text!r}: unexpected {other!r}")
        if opening or closing:
            tokens.append(opening or closing)
        elif quoted:
            tokens.append(("name", quoted))
        elif word.upper() in KEYWORDS:
            tokens.append(word.upper())
        else:
            tokens.append(("name", word))
    position = 0

    def peek():
        return tokens[position] if position < len(tokens) else None

    def take():
        nonlocal position
        position += 1
        return tokens[position - 1]

    def term():
        token = take() if peek() is not None else None
        if token == "(":
            inner = expression()
            if peek() != ")":
                raise PipelineError(f"formula {text!r}: a '(' is not closed")
            take()
            return inner
        if isinstance(token, tuple):
            return token[1]
        raise PipelineError(f"formula {text!r}: expected a concept name or '(' but found {token!r}")

    def connector():
        word = take()
        if word == "AND" and peek() == "NOT":
            take()
            return "AND NOT"
        if word == "CLOSE" and peek() == "TO":
            take()
            return "CLOSE TO"
        if word in ("OR", "AND", "WITH", "CLOSE"):
            return word
        raise PipelineError(f"formula {text!r}: expected a connector ({', '.join(CONNECTORS)}) but found {word!r}")

    def expression():
        left = term()
        while peek() not in (None, ")"):
            left = (connector(), left, term())
        return left

    result = expression()
    if peek() is not None:
        raise PipelineError(f"formula {text!r}: unexpected {peek()!r}")
    return result


def canonical(formula: Formula) -> str:
    """A key equal for formulas that differ only in the order of commutative operands:
    (A OR B) OR C, (A OR C) OR B and (B OR A) OR C share one."""
    if isinstance(formula, str):
        return _name_text(formula)
    op, left, right = formula
    if op in ("OR", "AND"):
        parts = []
        for side in (left, right):
            if not isinstance(side, str) and side[0] == op:
                parts.extend(canonical(side)[1:-1].split(f" {op} "))
            else:
                parts.append(canonical(side))
        return "(" + f" {op} ".join(sorted(parts)) + ")"
    sides = [canonical(left), canonical(right)]
    if op in COMMUTATIVE:
        sides.sort()
    return f"({sides[0]} {op} {sides[1]})"


def to_json(formula: Formula) -> Any:
    """The formula as a JSON tree: a leaf is its name, a node {"op", "left", "right"}."""
    if isinstance(formula, str):
        return formula
    op, left, right = formula
    return {"op": op, "left": to_json(left), "right": to_json(right)}


def from_json(tree: Any) -> Formula:
    """The formula of a JSON tree that to_json wrote; anything else is a PipelineError naming
    the part that is wrong."""
    if isinstance(tree, str):
        if not tree:
            raise PipelineError("formula tree: a leaf is an empty name; it must be a concept name")
        return tree
    if not isinstance(tree, dict) or set(tree) != {"op", "left", "right"}:
        raise PipelineError(f"formula tree: {tree!r} is neither a concept name nor an object with exactly the "
                            f"keys op, left, right")
    if tree["op"] not in CONNECTORS:
        raise PipelineError(f"formula tree: connector {tree['op']!r}; allowed: {', '.join(CONNECTORS)}")
    return (tree["op"], from_json(tree["left"]), from_json(tree["right"]))
