"""`nanobook`: run chapters, build the book, show what runs/ holds, chat with a model."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

import yaml

from nanolib.chat_cli import add_chat_parser
from nanolib.config import BookConfigError, load_book
from nanolib.procs import AlreadyRunningError, Interrupted, raise_on_signals
from nanolib.runs import ArtifactCorruptError, ArtifactMissingError, run_state


def _parse_overrides(pairs: list[list[str]] | None) -> dict:
    overrides = {}
    for key, value in pairs or []:
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            overrides[key] = value
    return overrides


def _chapters(book, keys: list[str]) -> list:
    if not keys or keys == ["all"]:
        return list(book.chapters)
    return [book.chapter(k) for k in keys]


def cmd_run(args: argparse.Namespace) -> int:
    """Execute chapters (skipping up-to-date runs unless --force)."""

    book = load_book()
    book.preset(args.preset)
    chapters = _chapters(book, args.chapters)
    overrides = _parse_overrides(args.param)
    if overrides and len(chapters) != 1:
        raise BookConfigError("-p/--param overrides need exactly one chapter, e.g. `run 01 -p …`")
    for ch in chapters:
        book.resolve(ch.slug, args.preset, overrides)
    if getattr(args, "seeds", None):
        return _run_seeds(args, book, chapters, overrides)
    for ch in chapters:
        where = f"chapter {ch.number}"
        print(f"nanobook: {where} {ch.title!r} at preset {args.preset!r} …")
        res = _execute(args, book, ch, overrides, where)
        getattr(args, "executions", []).append((ch, res))  # `make` tabulates them
    return 0


def _execute(args: argparse.Namespace, book, ch, overrides: dict, where: str, final=None):
    """Execute one chapter as `args` say (force, log output) and print how it went."""
    from nanolib.execute import execute_chapter

    res = execute_chapter(
        ch.slug,
        args.preset,
        overrides,
        book=book,
        force=args.force,
        log_output=args.log_output,
        final=final,
    )
    if res.action == "skipped":
        print(f"nanobook: {where} is up to date, not executed ({res.run_dir})")
    else:
        print(f"nanobook: {where} done in {res.wall_time_s:.1f} s → {res.run_dir}")
    return res


def _run_seeds(args: argparse.Namespace, book, chapters: list, overrides: dict) -> int:
    """Each chapter once per seed: its own seed is the canonical run, the rest go to seeds/<k>/."""
    from nanolib.seeds import seed_dir, seed_run_is_current

    for ch in chapters:
        canonical = book.resolve(ch.slug, args.preset, overrides).get("seed")
        if canonical is None:
            raise BookConfigError(f"chapter {ch.number} has no `seed` parameter to vary")
        # The other seeds first, the canonical run last: its chapter can then report the spread.
        seeds = list(dict.fromkeys(args.seeds))
        for k in sorted(seeds, key=lambda k: k == canonical):
            where = f"chapter {ch.number} seed {k} at preset {args.preset!r}"
            params = book.resolve(ch.slug, args.preset, {**overrides, "seed": k})
            if k == canonical:
                final, runs = None, overrides
            elif not args.force and seed_run_is_current(book, ch.slug, args.preset, params):
                print(f"nanobook: {where} is up to date, not executed")
                continue
            else:
                final, runs = seed_dir(ch.slug, args.preset, k), {**overrides, "seed": k}
            print(f"nanobook: {where} …")
            _execute(args, book, ch, runs, where, final)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Render runs/ into the static book (never executes)."""
    book = load_book()
    preset = args.preset or book.render_preset
    book.preset(preset)
    from nanolib.book import build_book

    t0 = time.time()
    out = build_book(preset, out=args.out, book=book)
    print(f"nanobook: built {out / 'index.html'} from runs/{preset} in {time.time() - t0:.1f} s")
    return 0


def cmd_make(args: argparse.Namespace) -> int:
    """Execute every chapter whose run is missing or stale, build the book, print the times."""
    args.chapters, args.param, args.force, args.executions = ["all"], None, False, []
    cmd_run(args)
    rc = cmd_build(args)
    print(times_table(args.executions))
    return rc


def times_table(executions: list) -> str:
    """Each chapter's wall time in this make (up-to-date ones took none), and the total."""
    rows = [
        (
            f"{ch.number} {ch.title}",
            "up to date" if res.action == "skipped" else f"{res.wall_time_s:,.1f} s",
        )
        for ch, res in executions
    ]
    total = sum(res.wall_time_s for _, res in executions if res.action != "skipped")
    rows.append(("total", f"{total:,.1f} s ({total / 60:.1f} min)"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {took:>18}" for name, took in rows)


def cmd_status(args: argparse.Namespace) -> int:
    """Print each chapter's run state at a preset."""
    book = load_book()
    preset = args.preset or book.render_preset
    book.preset(preset)
    for ch in book.chapters:
        st = run_state(book, ch.slug, preset)
        why = f" — {'; '.join(st.reasons)}" if st.reasons and st.status != "ok" else ""
        wall = st.manifest.get("wall_time_s") if st.manifest else None
        took = f" ({wall:.0f} s)" if isinstance(wall, (int, float)) and st.status == "ok" else ""
        print(f"{ch.number}  {ch.title:<32} {st.status}{took}{why}")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    """Print a chapter's resolved parameters at a preset, each with its source and range."""
    from nanolib.config import RANGES

    book = load_book()
    ch = book.chapter(args.chapter)
    rows = [
        (k, json.dumps(v), src, str(RANGES[k]) if k in RANGES else "")
        for k, v, src in book.explain(ch.slug, args.preset, _parse_overrides(args.param))
    ]
    print(f"chapter {ch.number} {ch.title!r} at preset {args.preset!r}:")
    head = ("parameter", "value", "from", "allowed")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    for r in [head, *rows]:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3])
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Print what chapters would train at a preset, their time and cost; 1 if one would fail."""
    from nanolib.plan import format_plan, plan_preset

    book = load_book()
    preset = args.preset or book.render_preset
    keys = [] if args.chapters == ["all"] else args.chapters
    result = plan_preset(book, preset, keys or None)
    print(format_plan(result))
    return 0 if result.ok else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `nanobook`."""
    p = argparse.ArgumentParser(prog="nanobook", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="execute chapters with papermill into runs/<preset>/")
    r.add_argument("chapters", nargs="*", help="chapter numbers or slugs (default: all)")
    r.add_argument("--preset", default="tiny")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"))
    r.add_argument("--force", action="store_true", help="execute even if the run is up to date")
    r.add_argument("--log-output", action="store_true", help="stream cell output to the console")
    r.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        metavar="K",
        help="run each chapter once per seed: its own seed is the canonical run, the others go "
        "to runs/<preset>/<chapter>/seeds/<K>/ (the report card shows mean ± spread)",
    )
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("build", help="render runs/<preset>/ into _book/ (never executes)")
    b.add_argument("--preset", default=None, help="default: book.yml render_preset")
    b.add_argument("--out", default=None)
    b.set_defaults(func=cmd_build)

    m = sub.add_parser("make", help="execute stale or missing chapters, then build the book")
    m.add_argument("--preset", default="tiny")
    m.add_argument("--out", default=None)
    m.add_argument("--log-output", action="store_true")
    m.set_defaults(func=cmd_make)

    pa = sub.add_parser(
        "params", help="a chapter's parameters at a preset: value, where it comes from, range"
    )
    pa.add_argument("chapter", help="chapter number or slug")
    pa.add_argument("--preset", default="tiny")
    pa.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"))
    pa.set_defaults(func=cmd_params)

    pl = sub.add_parser(
        "plan", help="a dry run on any CPU: each chapter's model, FLOPs, memory, time and cost"
    )
    pl.add_argument("chapters", nargs="*", help="chapter numbers or slugs (default: all)")
    pl.add_argument("--preset", default=None, help="default: book.yml render_preset")
    pl.set_defaults(func=cmd_plan)

    s = sub.add_parser("status", help="show each chapter's run state")
    s.add_argument("--preset", default=None)
    s.set_defaults(func=cmd_status)

    add_chat_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `nanobook` console script: every error is one line on stderr."""
    args = build_parser().parse_args(argv)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = raise_on_signals(signal.SIGTERM, signal.SIGHUP)  # stop chapters as Ctrl-C does
    try:
        rc = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return rc
    except (BookConfigError, ArtifactMissingError, ArtifactCorruptError) as e:
        print(f"nanobook: error: {e}", file=sys.stderr)
        return 2
    except AlreadyRunningError as e:
        print(f"nanobook: refused: {e}", file=sys.stderr)
        return 3
    except BrokenPipeError:
        # the reader went away (`nanobook status | head`): stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        print(f"nanobook: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    except Exception as e:
        from nanolib.execute import ChapterFailedError, ChapterInterruptedError

        if isinstance(e, ChapterInterruptedError):
            print(f"nanobook: {e}", file=sys.stderr)
            return 128 + e.signum
        if isinstance(e, ChapterFailedError):
            print(f"nanobook: error: {e}", file=sys.stderr)
            return 1
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
