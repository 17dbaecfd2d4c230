"""The `fnac` command line: one dispatcher, every verb on one contract, user errors as one line and status 2."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from fnac.cli import VERBS, main

ROOT = Path(__file__).resolve().parents[1]


def _fnac(*argv: str, before: str = "") -> subprocess.CompletedProcess:
    """`fnac ARGV` in a fresh interpreter; `before` runs first (e.g. to make a module unimportable)."""
    code = f"import sys\n{before}\nfrom fnac.cli import main\nsys.exit(main({list(argv)!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_help_is_fast_lists_every_verb_and_imports_no_verb():
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "fnac", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and time.perf_counter() - started < 5  # generous: torch is never imported
    for verb in ("synth", "prepare", "train", "eval", "export", "import", "score", "serve", "bench"):
        assert f"    {verb}" in out.stdout
    check = "import sys, fnac.cli; fnac.cli.build_parser(); print(sorted({'torch', 'training', 'service'} & set(sys.modules)))"
    assert (
        subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        == "[]"
    )


def test_bare_fnac_prints_the_verbs(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(verb in out for verb in VERBS) and "usage: fnac" in out


def test_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"fnac {metadata.version('fnac')}"


def test_every_verb_module_follows_the_contract():
    import importlib

    for verb, (module, _) in VERBS.items():
        loaded = importlib.import_module(module)
        assert callable(loaded.add_arguments) and callable(loaded.run), verb
        assert not module.startswith("benchmarks"), verb  # benchmarks are not installed


def test_every_option_has_help_and_its_help_shows_the_real_default():
    import importlib

    from fnac.cli import build_parser

    for verb, (module, _) in VERBS.items():
        parser = build_parser(importlib.import_module(module), verb)
        sub = parser._subparsers._group_actions[0].choices[verb]
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"fnac {verb} {action.option_strings[0]} has no help"
            if action.nargs != 0 and action.default is not None:
                assert "default" in formatter._get_help_string(action), (verb, action.option_strings)
    # the defaults quoted in serve's help are the ones the settings use (it once said 0.0.0.0 and bound 127.0.0.1)
    from service.config import Settings

    serve = build_parser(importlib.import_module("service.cli"), "serve")
    text = serve._subparsers._group_actions[0].choices["serve"].format_help()
    defaults = Settings.model_fields
    assert f"else {defaults['host'].default}" in text and f"else {defaults['port'].default}" in text


def _bad_inputs(tmp: Path) -> dict[str, list[str]]:
    (tmp / "checkpoint.pt").write_bytes(b"not a checkpoint")
    nowhere = str(tmp / "nowhere")
    return {
        "synth": ["synth", "-o", str(tmp / "s"), "--classes", "0"],
        "prepare": ["prepare", nowhere, "-o", str(tmp / "p")],
        "train": ["train", "--data", nowhere, "-o", str(tmp / "t")],
        "eval": [
            "eval",
            "--model",
            str(tmp / "checkpoint.pt"),
            "--data",
            nowhere,
            "--report",
            str(tmp / "r.json"),
        ],
        "import": ["import", str(tmp / "none.pth"), "-o", str(tmp / "i.pt")],
        "export": ["export", str(tmp / "none.pt"), "-o", str(tmp / "e.onnx")],
        "score": ["score", "--model", str(tmp / "none.onnx"), nowhere, "-o", str(tmp / "o.jsonl")],
        "serve": ["serve", "--model", str(tmp / "checkpoint.pt")],
        "bench": ["bench", "service", "--model", str(tmp / "none.onnx")],
        "doctor": ["doctor", "--model", str(tmp / "none.onnx")],
    }


def test_every_verb_on_bad_input_says_one_line_and_exits_2(tmp_path, capsys):
    cases = _bad_inputs(tmp_path)
    assert set(cases) == set(VERBS), "a verb without a bad-input case"
    for verb, argv in cases.items():
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, (verb, err)
        assert len(lines) == 1 and lines[0].startswith(f"fnac {verb}: error: "), (verb, err)


def test_serving_a_checkpoint_says_to_export_it_first(tmp_path, capsys):
    (tmp_path / "X.pt").write_bytes(b"weights")
    assert main(["serve", "--model", str(tmp_path / "X.pt")]) == 2
    expected = f"export it first: fnac export {tmp_path / 'X.pt'} -o {tmp_path / 'X.onnx'}"
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["train", "export", "eval"])
def test_a_missing_extra_is_named(verb, tmp_path):
    # As in the serving install: torch cannot be imported.
    cases = _bad_inputs(tmp_path)  # export and eval reach torch only for a checkpoint
    argv = {
        "train": ["train", "--help"],
        "export": ["export", str(tmp_path / "checkpoint.pt"), "-o", "x.onnx"],
    }
    argv["eval"] = cases["eval"]
    result = _fnac(*argv[verb], before="sys.modules['torch'] = None; sys.modules['onnx'] = None")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "this verb needs the train extra: pip install 'fnac[train]'" in lines[0]


def test_argument_mistakes_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as info:
        main(["synth", "--classes", "many"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1 and lines[0].startswith("fnac synth: error: ")
