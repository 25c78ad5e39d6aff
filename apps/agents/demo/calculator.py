"""Safe arithmetic for the calculator demo agent: the expression is parsed to an AST and walked; nothing is
evaluated by Python itself, so names, attributes, calls other than a few math functions, and huge powers are
refused."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

MAX_LENGTH = 500
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 1e300

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


class CalculationError(ValueError):
    pass


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression (`2 * (3 + 4)`, `sqrt(2) ^ 2`, `10 % 3`); `^` means power."""
    text = expression.strip()
    if not text:
        raise CalculationError("Send an arithmetic expression, for example: 2 * (3 + 4)")
    if len(text) > MAX_LENGTH:
        raise CalculationError(f"Expressions are limited to {MAX_LENGTH} characters.")
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise CalculationError(f"Not an arithmetic expression: {exc.msg}.") from exc
    try:
        result = _eval(tree.body)
    except ZeroDivisionError as exc:
        raise CalculationError("Division by zero.") from exc
    except (OverflowError, ValueError, TypeError) as exc:
        if isinstance(exc, CalculationError):
            raise
        raise CalculationError(f"Cannot compute that: {exc}.") from exc
    if isinstance(result, float) and result.is_integer() and abs(result) < 2**53:
        return int(result)
    return result


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculationError(f"Exponents are limited to {MAX_EXPONENT}.")
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
        and node.args
    ):
        return _checked(_FUNCTIONS[node.func.id](*(_eval(arg) for arg in node.args)))
    raise CalculationError(f"Unsupported element: {ast.unparse(node)}.")


def _checked(value: Any) -> Number:
    if isinstance(value, complex):
        raise CalculationError("The result is not a real number.")
    if abs(value) > MAX_MAGNITUDE:
        raise CalculationError("The result is too large.")
    result: Number = value
    return result
