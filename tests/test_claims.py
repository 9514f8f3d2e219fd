"""nanolib.claims: a false claim fails the chapter except at smoke."""

import pytest

from nanolib.claims import ClaimError, expect, say


def test_true_claim_passes_and_is_shown(capsys):
    assert expect(2 > 1, "two beats one", preset="tiny") is True


def test_false_claim_fails_with_the_claim_in_the_message():
    with pytest.raises(ClaimError, match="loss falls below the bigram"):
        expect(False, "loss falls below the bigram", preset="tiny")


def test_false_claim_is_only_reported_at_smoke():
    assert expect(False, "loss falls below the bigram", preset="smoke") is False


def test_say_shows_text():
    say("val bpb **1.83**")
