"""Tools a model calls mid-answer: an arithmetic calculator, sandboxed Python, and the routing rule.

A tool is a callable ``str -> str``: it gets the text the model wrote between
``<|python_start|>`` and ``<|python_end|>`` and returns the text the engine forces back into the
stream between ``<|output_start|>`` and ``<|output_end|>``. Tools never raise into the engine:
`run_tool` turns any failure into an ``Error: …`` line the model can read.

Routing (`run_tool`): code that is a pure arithmetic expression (see `is_arithmetic`) goes to the
``"calculator"`` tool, anything else to ``"python"``; when the chosen name is not in the mapping
the other tool runs (so a calculator-only mapping answers ``Error: …`` to non-arithmetic code).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping

Tool = Callable[[str], str]

MAX_EXPRESSION_CHARS = 256  # longer "arithmetic" is refused before it is parsed
MAX_EXPONENT = 1024  # |b ** e| is refused for |e| above this …
MAX_DIGITS = 100  # … and any value (intermediate or final) beyond 10**MAX_DIGITS in magnitude
MAX_OUTPUT_CHARS = 1000  # tool output longer than this is cut (the model reads every token)
_LIMIT = 10**MAX_DIGITS

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate."""


def _parse(expression: str) -> ast.expr:
    """The expression's AST, if it is arithmetic only; CalculatorError otherwise."""
    text = expression.strip()
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise CalculatorError(f"not an expression ({type(e).__name__})") from None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp)):
            continue
        if isinstance(node, tuple(_BINARY) + tuple(_UNARY)):
            continue
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            continue
        raise CalculatorError(f"{type(node).__name__} is not allowed (numbers and + - * / // % **)")
    return tree.body


def _checked(x: int | float) -> int | float:
    if isinstance(x, complex):
        raise CalculatorError("the result is not a real number")
    if isinstance(x, float) and not math.isfinite(x):
        raise CalculatorError("the result overflows")
    if abs(x) > _LIMIT:
        raise CalculatorError(f"a value exceeds 10**{MAX_DIGITS}")
    return x


def _power(base: int | float, exp: int | float) -> int | float:
    if abs(exp) > MAX_EXPONENT:
        raise CalculatorError(f"exponent {exp} is larger than {MAX_EXPONENT}")
    # Refuse before computing: an int power's size is known from logarithms.
    if exp > 0 and abs(base) > 1 and exp * math.log10(abs(base)) > MAX_DIGITS:
        raise CalculatorError(f"a value exceeds 10**{MAX_DIGITS}")
    return base**exp


def _eval(node: ast.expr) -> int | float:
    if isinstance(node, ast.Constant):
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand))
    assert isinstance(node, ast.BinOp)  # _parse admitted nothing else
    left, right = _eval(node.left), _eval(node.right)
    try:
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        return _checked(_BINARY[type(node.op)](left, right))
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("the result overflows") from None


def evaluate_arithmetic(expression: str) -> int | float:
    """The value of an arithmetic expression, walked from its AST (never `eval`)."""
    return _eval(_parse(expression))


def is_arithmetic(code: str) -> bool:
    """Whether code is one expression of numbers, + - * / // % **, unary ± and parentheses."""
    try:
        _parse(code)
    except CalculatorError:
        return False
    return True


def format_number(x: int | float) -> str:
    """Ints as they are; whole floats without ".0"; other floats to 12 significant digits."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return str(x) if isinstance(x, int) else f"{x:.12g}"


def calculator(code: str) -> str:
    """The calculator tool: the expression's value as text, or an ``Error: …`` line."""
    try:
        return format_number(evaluate_arithmetic(code))
    except CalculatorError as e:
        return f"Error: {e}"


def python(code: str) -> str:
    """The python tool: run code in nanolib.sandbox and return its stdout (or an error line)."""
    try:
        from nanolib.sandbox import run_python  # imported late: the sandbox is optional here
    except ImportError:
        return "Error: the python tool is not available (no nanolib.sandbox)"
    try:
        result = run_python(code, timeout_s=5.0, memory_mb=256)
    except Exception as e:  # e.g. no sandbox on this OS: the model reads why
        return f"Error: {type(e).__name__}: {e}"
    if result.ok:
        return result.stdout.rstrip("\n")
    last = (result.stderr or "").strip().splitlines()[-1:] or [""]
    return f"Error: {result.error}" + (f": {last[0]}" if last[0] else "")


DEFAULT_TOOLS: Mapping[str, Tool] = {"calculator": calculator, "python": python}


def run_tool(code: str, tools: Mapping[str, Tool]) -> str:
    """Route code to a tool (module docstring), run it, and return its output, cut to length."""
    if not tools:
        return "Error: no tools are available"
    name = "calculator" if is_arithmetic(code) else "python"
    if name not in tools:
        name = "python" if name == "calculator" else "calculator"
    tool = tools.get(name) or next(iter(tools.values()))
    try:
        out = str(tool(code))
    except Exception as e:  # a tool's failure is the model's to read, never the engine's crash
        out = f"Error: {type(e).__name__}: {e}"
    if len(out) > MAX_OUTPUT_CHARS:
        out = out[:MAX_OUTPUT_CHARS] + " …(truncated)"
    return out
