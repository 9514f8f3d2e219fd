"""Claims follow runs: prose that states a run's outcome is printed from it or checked by it.

`say` prints a Markdown sentence built from computed values; `expect` checks a sentence the
prose states and fails the chapter when it no longer holds (at `smoke`, whose numbers mean
nothing, it only reports). Every chapter uses these two for what its runs show.
"""

from __future__ import annotations

UNCHECKED_PRESETS = frozenset({"smoke"})


class ClaimError(AssertionError):
    """A sentence of the chapter's prose no longer holds for this run."""


def expect(condition: bool, claim: str, *, preset: str) -> bool:
    """Check one claim of the prose against the run; raise ClaimError when it fails."""
    held = bool(condition)
    if preset in UNCHECKED_PRESETS:
        status = "holds" if held else "does not hold (not checked at this preset)"
        _show(f"{'✓' if held else '·'} *{claim}* — {status}")
        return held
    if not held:
        raise ClaimError(f"claim no longer holds at preset {preset!r}: {claim}")
    _show(f"✓ *{claim}*")
    return held


def say(markdown: str) -> None:
    """Show a sentence whose numbers were formatted from the run."""
    _show(markdown)


def _show(markdown: str) -> None:
    try:
        from IPython.display import Markdown, display
    except ImportError:  # outside Jupyter: plain text is enough
        print(markdown)
        return
    display(Markdown(markdown))
