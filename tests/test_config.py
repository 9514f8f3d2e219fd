"""book.yml loading and validation, and the CLI's one-line errors."""

from pathlib import Path

import pytest
import yaml

from nanolib.cli import main
from nanolib.config import BookConfigError, load_book, notebook_parameters

ROOT = Path(__file__).resolve().parent.parent


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
        (
            lambda r: r["presets"]["tiny"].update(chapters={"99_later": {}}),
            "unknown chapter '99_later'",
        ),
        (
            lambda r: r["presets"]["smoke"]["chapters"]["01_tokenizer"].update(vocab_size="x"),
            "preset 'smoke' chapter 01_tokenizer: parameter 'vocab_size' must be int",
        ),
        (lambda r: r["chapters"][0]["params"].pop("seed"), "parameters cell of 01_tokenizer.py"),
        (lambda r: r.update(render_preset="huge"), "render_preset 'huge' is not a preset"),
        (lambda r: r.pop("presets"), r"missing key\(s\) \['presets'\]"),
        # ranges, declared once in nanolib.config.RANGES
        (
            lambda r: r["presets"]["smoke"]["chapters"]["01_tokenizer"].update(vocab_size=-512),
            "preset 'smoke' chapter 01_tokenizer: parameter 'vocab_size' must be ≥ 265, got -512",
        ),
        (
            lambda r: r["chapters"][0]["params"].update(vocab_size=100),
            r"chapters\[0\] \(01_tokenizer\) default: parameter 'vocab_size' must be ≥ 265",
        ),
        (
            lambda r: r["presets"]["tiny"].update(chapters={"02_model": {"depth": 0}}),
            "preset 'tiny' chapter 02_model: parameter 'depth' must be ≥ 1, got 0",
        ),
        (
            lambda r: r["presets"]["tiny"].update(chapters={"02_model": {"depths": [2, 0]}}),
            r"parameter 'depths' must be ≥ 1, got \[2, 0\]",
        ),
        # the cost block
        (
            lambda r: r["cost"]["cuda"].update(mfu=1.5),
            r"book.yml cost 'cuda': 'mfu' must be in \(0, 1\], got 1.5",
        ),
        (
            lambda r: r["cost"]["cuda"].update(dollars_per_hour="three"),
            r"book.yml cost 'cuda': 'dollars_per_hour' must be a number, got 'three'",
        ),
        (
            lambda r: r["cost"]["cuda"].pop("peak_flops"),
            r"book.yml cost 'cuda': missing key\(s\) \['peak_flops'\]",
        ),
        (
            lambda r: r["cost"].pop("cuda"),
            r"preset 'd12' runs on cuda but `cost:` has no 'cuda' block",
        ),
        (
            lambda r: r["cost"].update(tpu={"mfu": 0.5}),
            r"book.yml cost 'tpu': unknown device kind; valid kinds: \['cpu', 'cuda'\]",
        ),
        # types of the book's own keys
        (
            lambda r: r["presets"]["d12"].update(nproc="two"),
            r"preset 'd12': 'nproc' must be a whole number ≥ 1 \(processes\), got 'two'",
        ),
        (
            lambda r: r["chapters"][1].update(timeout_s="fifteen"),
            r"chapters\[1\]: 'timeout_s' must be a whole number ≥ 1 \(seconds\), got 'fifteen'",
        ),
        (
            lambda r: r.update(cell_timeout_s="long"),
            r"book.yml: 'cell_timeout_s' must be a whole number ≥ 1 \(seconds\), got 'long'",
        ),
        (
            lambda r: r["presets"]["smoke"].update(chapters=["01_tokenizer", "02_model"]),
            "preset 'smoke': 'chapters' must be a mapping of chapter slug -> parameter values",
        ),
        (
            lambda r: r["presets"]["smoke"]["chapters"].update({"02_model": [1, 2]}),
            "preset 'smoke' chapter 02_model: expected a mapping of parameter -> value, got a list",
        ),
        (
            lambda r: r["chapters"][0].update(produces="tokenizer"),
            r"'produces' must be a list of artifact names, e.g. \[tokenizer\], got 'tokenizer'",
        ),
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
        (["run", "03", "--preset", "smoke", "-p", "num_steps", "0"], "'num_steps' must be ≥ 1"),
        (["run", "01", "--preset", "smoke", "-p", "vocab_size", "-512"], "must be ≥ 265, got -512"),
        (["run", "02", "--preset", "smoke", "-p", "depth", "0"], "'depth' must be ≥ 1, got 0"),
        (["params", "01", "--preset", "smoke", "-p", "max_chars", "0"], "'max_chars' must be ≥ 1"),
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


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r["presets"]["d12"].update(nproc="two"),
        lambda r: r["chapters"][0].update(produces="tokenizer"),
        lambda r: r["presets"]["smoke"].update(chapters=["01_tokenizer"]),
    ],
)
def test_status_reports_a_bad_book_in_one_line(book_copy, capsys, change):
    edit_yaml(book_copy / "book.yml", change)
    assert main(["status", "--preset", "smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("nanobook: error: book.yml")


def test_ranges_name_real_parameters():
    """Every declared range belongs to a parameter of some chapter, and the choices match the
    registries they mirror."""
    from nanolib.config import RANGES
    from nanolib.data import SOURCES
    from nanolib.tokenizer import SPECIAL_TOKENS

    book = load_book(ROOT / "book.yml")
    names = {k for ch in book.chapters for k in ch.params}
    assert set(RANGES) <= names, sorted(set(RANGES) - names)
    assert RANGES["data"].choices == tuple(SOURCES)
    assert RANGES["vocab_size"].lo == 256 + len(SPECIAL_TOKENS)


def test_params_prints_values_with_their_source(book_copy, capsys):
    assert main(["params", "01", "--preset", "smoke", "-p", "vocab_size", "1024"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["vocab_size"][1:4] == ["1024", "override", "(-p)"]
    assert rows["max_chars"][1:4] == ["200000", "preset", "smoke"]
    assert rows["seed"][1:5] == ["0", "book.yml", "default", "≥"]
    assert rows["data"][-2:] == ["tiny,", "fineweb-edu"]


@pytest.mark.parametrize("chapter", [ch.slug[:2] for ch in load_book(ROOT / "book.yml").chapters])
def test_papermill_shows_each_parameter_with_its_type(chapter):
    """`papermill --help-notebook` names a type and a help for every parameter of every chapter:
    the type book.yml gives it (or, for a null default, the presets' values give it)."""
    import papermill

    book = load_book(ROOT / "book.yml")
    ch = book.chapter(chapter)
    shown = papermill.inspect_notebook(str(ch.notebook))
    assert set(shown) == {"preset", *ch.params, "run_dir"}
    got = {k: p["inferred_type_name"] for k, p in shown.items()}
    assert "Unknown type" not in got.values() and "None" not in got.values()
    want = {k: type(v).__name__ for k, v in ch.params.items() if v is not None}
    want.update({k: t.__name__ for k, t in ch.null_types.items()}, preset="str", run_dir="str")
    assert {k: got[k] for k in want} == want
    assert all(p["default"] == "None" for k, p in shown.items() if k != "preset")
    assert all(p["help"] for p in shown.values())
