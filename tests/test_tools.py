"""Tools: the calculator computes arithmetic and refuses the rest; routing; the python tool."""

import sys
import types
from dataclasses import dataclass

import pytest

from nanolib import tools
from nanolib.tools import (
    CalculatorError,
    calculator,
    evaluate_arithmetic,
    is_arithmetic,
    run_tool,
)


@pytest.mark.parametrize(
    "expression, text",
    [
        ("1+2*3", "7"),
        ("(1 + 2) * 3", "9"),
        ("-3**2", "-9"),
        ("--5", "5"),
        ("+4", "4"),
        ("7/2", "3.5"),
        ("6/3", "2"),
        ("7//2", "3"),
        ("-7//2", "-4"),
        ("7%3", "1"),
        ("2**10", "1024"),
        ("2**-1", "0.5"),
        ("1/3", "0.333333333333"),
        ("12*3.5", "42"),
        ("1_000 * 3", "3000"),
        ("2**332", str(2**332)),  # 100 digits: at the limit
        ("  4 - 10\n", "-6"),
    ],
)
def test_calculator_values(expression, text):
    assert calculator(expression) == text


@pytest.mark.parametrize(
    "expression, reason",
    [
        ("x + 1", "Name is not allowed"),
        ("abs(-1)", "Call is not allowed"),
        ("__import__('os').system('ls')", "Call is not allowed"),
        ("(1).real", "Attribute is not allowed"),
        ("'a' * 3", "Constant is not allowed"),
        ("True + 1", "Constant is not allowed"),
        ("1 < 2", "Compare is not allowed"),
        ("[1][0]", "Subscript is not allowed"),
        ("(lambda: 1)()", "not allowed"),
        ("2**100000", "exponent 100000 is larger than 1024"),
        ("10**200", "exceeds 10**100"),
        ("9**9**9", "exponent 387420489"),
        ("10**60 * 10**60", "exceeds 10**100"),
        ("1e300", "exceeds 10**100"),
        ("1e99 / 1e-300", "overflows"),
        ("(-8) ** 0.5", "not a real number"),
        ("1/0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("1 +", "not an expression"),
        ("", "empty"),
        ("1+" * 200 + "1", "longer than 256"),
        ("1; import os", "not an expression"),
    ],
)
def test_calculator_refuses(expression, reason):
    assert calculator(expression).startswith("Error:")
    assert reason in calculator(expression)
    with pytest.raises(CalculatorError):
        evaluate_arithmetic(expression)


def test_calculator_never_calls_eval(monkeypatch):
    import builtins

    def no_eval(*args, **kwargs):
        raise AssertionError("eval was called")

    monkeypatch.setattr(builtins, "eval", no_eval)
    assert calculator("(2 + 3) * 4") == "20"


def test_is_arithmetic():
    assert is_arithmetic("1 + 2 * (3 - 4) ** 2")
    assert is_arithmetic("10**200")  # arithmetic (the calculator then refuses its size)
    assert not is_arithmetic("print(1)")
    assert not is_arithmetic("x = 3")
    assert not is_arithmetic("import os")


def test_run_tool_routes_and_contains_failures():
    seen = []
    fake = {"calculator": lambda c: seen.append(("calc", c)) or "c", "python": lambda c: "p"}
    assert run_tool("2+2", fake) == "c" and seen == [("calc", "2+2")]
    assert run_tool("print(2)", fake) == "p"
    assert run_tool("print(2)", {"calculator": calculator}).startswith("Error: Call")
    assert run_tool("2+2", {"python": lambda c: "p"}) == "p"
    assert run_tool("2+2", {}) == "Error: no tools are available"

    def explode(code):
        raise MemoryError("too big")

    assert run_tool("2+2", {"calculator": explode}) == "Error: MemoryError: too big"
    long = run_tool("x", {"python": lambda c: "y" * 5000})
    assert long.startswith("y" * tools.MAX_OUTPUT_CHARS) and long.endswith("…(truncated)")
    assert len(long) < tools.MAX_OUTPUT_CHARS + 20


@dataclass
class FakeResult:
    ok: bool
    stdout: str
    stderr: str
    error: str | None


def test_python_tool_uses_the_sandbox_and_reports_its_errors(monkeypatch):
    results = {
        "print(6*7)": FakeResult(True, "42\n", "", None),
        "while True: pass": FakeResult(False, "", "", "timeout"),
        "1/0": FakeResult(
            False, "", "Traceback …\nZeroDivisionError: division by zero\n", "exception"
        ),
    }
    calls = []

    def run_python(code, timeout_s=5.0, memory_mb=256):
        calls.append((code, timeout_s, memory_mb))
        return results[code]

    fake = types.ModuleType("nanolib.sandbox")
    fake.run_python = run_python
    monkeypatch.setitem(sys.modules, "nanolib.sandbox", fake)
    assert tools.python("print(6*7)") == "42"
    assert tools.python("while True: pass") == "Error: timeout"
    assert tools.python("1/0") == "Error: exception: ZeroDivisionError: division by zero"
    assert calls[0] == ("print(6*7)", 5.0, 256)


def test_python_tool_without_a_sandbox_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "nanolib.sandbox", None)  # import raises ImportError
    assert tools.python("print(1)").startswith("Error: the python tool is not available")


def test_python_tool_runs_code_in_the_real_sandbox():
    pytest.importorskip("nanolib.sandbox")
    assert run_tool("print(sum(range(10)))", tools.DEFAULT_TOOLS) == "45"
    assert run_tool("raise ValueError('nope')", tools.DEFAULT_TOOLS) == (
        "Error: exception: ValueError: nope"
    )
    assert run_tool("x = 2", tools.DEFAULT_TOOLS) == ""  # no output is an empty answer


def test_python_tool_turns_a_sandbox_failure_into_text(monkeypatch):
    def run_python(code, timeout_s=5.0, memory_mb=256):
        raise OSError("no POSIX here")

    fake = types.ModuleType("nanolib.sandbox")
    fake.run_python = run_python
    monkeypatch.setitem(sys.modules, "nanolib.sandbox", fake)
    assert tools.python("print(1)") == "Error: OSError: no POSIX here"
