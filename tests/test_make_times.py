"""`nanobook make` ends with each chapter's wall time in this make and the total."""

from pathlib import Path

from nanolib.cli import times_table
from nanolib.config import load_book
from nanolib.execute import Execution

BOOK = load_book(Path(__file__).resolve().parent.parent / "book.yml")


def test_times_table_lists_each_chapter_and_the_total():
    first, second, third = BOOK.chapters[:3]
    executions = [
        (first, Execution(first.slug, "skipped", Path("x"))),
        (second, Execution(second.slug, "executed", Path("y"), 12.25)),
        (third, Execution(third.slug, "executed", Path("z"), 95.0)),
    ]
    lines = times_table(executions).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(f"{first.number} {first.title}") and lines[0].endswith("up to date")
    assert lines[1].endswith("12.2 s") and lines[2].endswith("95.0 s")
    assert lines[3].startswith("total") and lines[3].endswith("107.2 s (1.8 min)")
