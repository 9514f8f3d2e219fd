"""Book time bench: the `tiny` book from a clean runs/, each chapter's time against its budget.

Run: `.venv/bin/python bench/book_time.py [--preset tiny] [--chapters 01 03] [--keep]`. Points
NANOBOOK_RUNS at a fresh temporary folder (so nothing is reused: no runs, no stored compile
verdicts, a cold inductor cache — a first reader's experience), executes the chapters in book
order as `nanobook make` would, and prints each one's wall time beside the budget a chapter has
at `tiny` on 2 CPU cores, then the total against the book's. `--warm` reuses the inductor cache
and compile verdicts of the real runs/.cache/ (a re-run's experience). Note how busy the machine
is (the load average is printed): on a shared machine the times are upper bounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

# Minutes per chapter at `tiny` on 2 CPU cores (issue 16), and for the whole book.
BUDGET_MIN = {"01": 0.5, "02": 0.5, "03": 3, "04": 4, "05": 1, "06": 4, "07": 5, "08": 2}
BOOK_BUDGET_MIN = 20


def main() -> None:
    """Execute the chapters into a clean runs/ and print the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--chapters", nargs="+", help="numbers or slugs (default: every chapter)")
    ap.add_argument("--keep", action="store_true", help="keep the runs folder (its path is shown)")
    ap.add_argument("--warm", action="store_true", help="reuse runs/.cache/ (compiled code)")
    args = ap.parse_args()

    from nanolib.config import load_book
    from nanolib.runs import runs_root

    real_cache = runs_root() / ".cache"
    runs = Path(tempfile.mkdtemp(prefix="nanobook-book-time-"))
    os.environ["NANOBOOK_RUNS"] = str(runs)
    if args.warm and real_cache.exists():
        (runs / ".cache").symlink_to(real_cache, target_is_directory=True)
    from nanolib.execute import execute_chapter

    book = load_book()
    chapters = [book.chapter(c) for c in args.chapters] if args.chapters else book.chapters
    print(f"runs: {runs} ({'warm' if args.warm else 'cold'} cache); load {os.getloadavg()}")
    rows = []
    try:
        for ch in chapters:
            t0 = time.perf_counter()
            execute_chapter(ch.slug, args.preset, book=book)
            rows.append((ch, time.perf_counter() - t0))
            print(f"chapter {ch.number} done in {rows[-1][1]:.0f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(runs, ignore_errors=True)
    print(f"\n{'chapter':<36} {'time':>9} {'budget':>9}")
    for ch, seconds in rows:
        budget = BUDGET_MIN.get(ch.number)
        over = " over" if budget is not None and seconds > budget * 60 else ""
        limit = f"{budget:g} min" if budget is not None else "—"
        print(f"{ch.number} {ch.title:<33} {seconds / 60:>5.1f} min {limit:>9}{over}")
    total = sum(s for _, s in rows)
    budget = sum(BUDGET_MIN.get(ch.number, 0) for ch, _ in rows) if args.chapters else None
    budget = budget if budget is not None else BOOK_BUDGET_MIN
    print(f"{'total':<36} {total / 60:>5.1f} min {budget:>5g} min; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
