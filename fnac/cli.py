"""`fnac`: one command line for the whole artifact flow (`fnac --help` lists the verbs).

Every verb lives in its own module, next to the code it drives, and follows one contract: `add_arguments(parser)`
declares its options and `run(args) -> int` does the work. This module only dispatches, and it imports a
verb's module only when that verb runs, so `fnac --help` needs nothing but the standard library and a verb works
wherever its own dependencies are installed (`fnac serve` and `fnac score` without torch).

User errors (a missing file, an unusable input, a missing optional dependency) end in one line on stderr,
`fnac VERB: error: ...`, and exit status 2; a traceback is a bug.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib import metadata

DESCRIPTION = """\
FNAC sound-source localization: where in the picture does the sound come from?

artifact flow:
  raw videos --prepare--> dataset dir      (or: synth --> synthetic dataset dir)
  dataset    --train----> checkpoint .pt   (official .pth --import--> checkpoint .pt)
  checkpoint --export---> model.onnx       --serve--> POST /localize    --score--> JSONL offline
  checkpoint or model.onnx --eval--> AP50 / mean cIoU / AUC report
"""

# verb -> (module with add_arguments(parser) and run(args), one line of help)
VERBS = {
    "synth": ("training.synth", "generate the synthetic sounding-objects benchmark (VGG-SS layout)"),
    "prepare": ("training.prepare", "turn a folder or CSV of videos into a dataset directory"),
    "train": ("training.train", "train FNAC (or the contrastive baseline) on a dataset directory"),
    "eval": ("training.evaluate", "evaluate a checkpoint or ONNX model with the official protocol"),
    "import": ("training.import_checkpoint", "convert an official FNAC / EZ-VSL .pth checkpoint into ours"),
    "export": ("training.export_model", "export a checkpoint to the deployable ONNX model (verified)"),
    "score": ("training.score", "score videos or frame+audio pairs offline to JSONL"),
    "serve": ("service.cli", "run the HTTP service (POST /localize) on an ONNX model"),
    "bench": ("training.bench", "measure speed side by side (model: torch vs ONNX; service: HTTP vs raw)"),
    "doctor": ("service.doctor", "what this install can run on: versions, providers, GPU, driver, verdict"),
}

# The install extra that brings each optional top-level module a verb may need.
EXTRAS = {
    **dict.fromkeys(
        ("torch", "torchvision", "torchaudio", "onnx", "onnxscript", "scipy", "matplotlib"), "train"
    ),
    **dict.fromkeys(
        (
            "onnxruntime",
            "fastapi",
            "fastapi_offline",
            "uvicorn",
            "pydantic",
            "pydantic_settings",
            "av",
            "PIL",
        ),
        "serve",
    ),
    **dict.fromkeys(("multipart", "prometheus_client", "tqdm", "httpx"), "serve"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line like every other user error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; an option's help ends with its default unless the help states it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.nargs == 0:
            return text
        return f"{text} (default %(default)s)"


def version() -> str:
    try:
        return metadata.version("fnac")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def build_parser(verb_module=None, verb: str | None = None) -> argparse.ArgumentParser:
    """The parser with every verb listed; the options of `verb` (from its module) only when it runs."""
    parser = _Parser(prog="fnac", description=DESCRIPTION, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"fnac {version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (_, help_text) in VERBS.items():
        description = (verb_module.__doc__ if name == verb and verb_module else None) or help_text
        sub = verbs.add_parser(
            name,
            help=help_text,
            description=description,
            formatter_class=_HelpFormatter,
        )
        if name == verb and verb_module is not None:
            verb_module.add_arguments(sub)
    return parser


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The one-line reason for a missing optional dependency, or None when it is not one of ours."""
    top = (exc.name or "").split(".")[0]
    if top not in EXTRAS:
        return None
    extra = EXTRAS[top]
    return f"{top} is not installed; this verb needs the {extra} extra: pip install 'fnac[{extra}]'"


def _fail(verb: str, message: str) -> int:
    one_line = " ".join(message.split())  # a message that spans lines (a library's) still reads as one
    print(f"fnac {verb}: error: {one_line}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from fnac.errors import FnacError

    argv = sys.argv[1:] if argv is None else list(argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    if verb not in VERBS:
        parser = build_parser()
        if not argv:
            parser.print_help()
            return 0
        parser.parse_args(argv)  # --help, --version, or argparse's one-line usage error (status 2)
        return 2
    try:
        module = importlib.import_module(VERBS[verb][0])
    except ModuleNotFoundError as exc:
        if (reason := _missing_extra(exc)) is None:
            raise
        return _fail(verb, reason)
    args = build_parser(module, verb).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return module.run(args) or 0
    except FnacError as exc:
        return _fail(verb, str(exc))
    except ModuleNotFoundError as exc:
        if (reason := _missing_extra(exc)) is None:
            raise
        return _fail(verb, reason)
    except KeyboardInterrupt:
        print(f"fnac {verb}: interrupted", file=sys.stderr)
        return 130
