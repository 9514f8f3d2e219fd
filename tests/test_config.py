"""book.yml loading and validation, and the CLI's one-line errors."""

import shutil
from pathlib import Path

import pytest
import yaml

from nanolib.cli import main
from nanolib.config import BookConfigError, load_book, notebook_parameters

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def book_copy(tmp_path, monkeypatch):
    """A copy of book.yml and the chapters that tests may break."""
    shutil.copy(ROOT / "book.yml", tmp_path / "book.yml")
    shutil.copytree(ROOT / "chapters", tmp_path / "chapters")
    monkeypatch.setenv("NANOBOOK_ROOT", str(tmp_path))
    monkeypatch.setenv("NANOBOOK_RUNS", str(tmp_path / "runs"))
    return tmp_path


def edit_yaml(path: Path, change) -> None:
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def test_real_book_loads_and_resolves():
    book = load_book(ROOT / "book.yml")
    assert [c.slug for c in book.chapters][0] == "01_tokenizer"
    assert {"smoke", "tiny", "d12", "miniseries", "speedrun"} <= set(book.presets)
    tiny = book.resolve("01", "tiny")
    smoke = book.resolve("01_tokenizer", "smoke")
    assert tiny["vocab_size"] == 4096 and smoke["vocab_size"] == 512
    assert book.resolve("01", "d12")["data"] == "fineweb-edu"
    assert book.resolve("01", "tiny", {"vocab_size": 2048})["vocab_size"] == 2048
    assert book.producer_of("tokenizer").slug == "01_tokenizer"


def test_parameters_cell_matches_book():
    params = notebook_parameters(ROOT / "chapters/01_tokenizer.py")
    assert params["preset"] == "tiny"
    assert all(v is None for k, v in params.items() if k != "preset")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("vocab_size", "big", "must be int"),
        ("vocab_size", 3.5, "must be int"),
        ("vocab_size", True, "must be int"),
        ("vocab_sise", 1, "unknown parameter 'vocab_sise'; valid parameters: data, doc_cap"),
    ],
)
def test_bad_override(key, value, message):
    book = load_book(ROOT / "book.yml")
    with pytest.raises(BookConfigError, match=message):
        book.resolve("01", "tiny", {key: value})


def test_unknown_preset_and_chapter():
    book = load_book(ROOT / "book.yml")
    with pytest.raises(BookConfigError, match="unknown preset 'huge'; valid presets: smoke, tiny"):
        book.resolve("01", "huge")
    with pytest.raises(BookConfigError, match="unknown chapter '42'"):
        book.chapter("42")


def test_malformed_yaml(book_copy):
    (book_copy / "book.yml").write_text("title: x\nchapters: [\n")
    with pytest.raises(BookConfigError, match=r"book.yml line \d+: not valid YAML"):
        load_book()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.update(colour="red"), r"unknown key\(s\) \['colour'\]"),
        (lambda r: r["chapters"][0].update(file="chapters/99_x.py"), "does not exist"),
        (lambda r: r["presets"]["tiny"].update(device="tpu"), "device 'tpu' must be one of"),
        (lambda r: r["presets"]["tiny"].update(chapters={"07_rl": {}}), "unknown chapter '07_rl'"),
        (
            lambda r: r["presets"]["smoke"]["chapters"]["01_tokenizer"].update(vocab_size="x"),
            "preset 'smoke' chapter 01_tokenizer: parameter 'vocab_size' must be int",
        ),
        (lambda r: r["chapters"][0]["params"].pop("seed"), "parameters cell of 01_tokenizer.py"),
        (lambda r: r.update(render_preset="huge"), "render_preset 'huge' is not a preset"),
        (lambda r: r.pop("presets"), r"missing key\(s\) \['presets'\]"),
    ],
)
def test_invalid_book(book_copy, change, message):
    edit_yaml(book_copy / "book.yml", change)
    with pytest.raises(BookConfigError, match=message):
        load_book()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "01", "--preset", "huge"], "unknown preset 'huge'"),
        (["run", "01", "--preset", "smoke", "-p", "vocab_size", "big"], "must be int"),
        (["run", "01", "--preset", "smoke", "-p", "nope", "1"], "unknown parameter 'nope'"),
        (["build", "--preset", "huge"], "unknown preset 'huge'"),
    ],
)
def test_cli_errors_are_one_line(book_copy, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (book_copy / "runs").exists()


def test_cli_malformed_book(book_copy, capsys):
    (book_copy / "book.yml").write_text("presets: {tiny: [\n")
    assert main(["status"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not valid YAML" in err


def test_null_default_takes_its_type_from_the_presets(book_copy):
    book = load_book(book_copy / "book.yml")
    assert book.chapter("04").null_types == {"family_tokens_per_param": float}
    assert (
        book.resolve("04", "tiny", {"family_tokens_per_param": 8})["family_tokens_per_param"] == 8.0
    )
    with pytest.raises(BookConfigError, match="must be float \\(or null\\), got str 'ten'"):
        book.resolve("04", "tiny", {"family_tokens_per_param": "ten"})

    def bad(raw):
        raw["presets"]["d12"]["chapters"]["04_scaling"]["family_tokens_per_param"] = [8]

    edit_yaml(book_copy / "book.yml", bad)
    with pytest.raises(
        BookConfigError, match="'family_tokens_per_param' values of different types"
    ):
        load_book(book_copy / "book.yml")
