"""fnac/contract.py against docs/CONTRACT.md and against what the export really writes."""

from __future__ import annotations

import re
from pathlib import Path

from fnac import contract

CONTRACT_MD = (Path(__file__).resolve().parents[1] / "docs" / "CONTRACT.md").read_text()


def _section(start: str, end: str) -> str:
    return CONTRACT_MD[CONTRACT_MD.index(start) : CONTRACT_MD.index(end, CONTRACT_MD.index(start))]


def _names(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_0-9]+)`", text))


def test_the_page_lists_every_input_output_and_metadata_key():
    onnx = _section("## ONNX artifact", "Verification at export")
    assert set(contract.INPUTS) <= _names(_section("Inputs", "Outputs"))
    assert {*contract.OUTPUTS, contract.OGL_OUTPUT} <= _names(_section("Outputs", "metadata_props"))
    assert set(contract.METADATA_KEYS) <= _names(_section("metadata_props", "The names above"))
    assert f'`fnac_format_version` "{contract.FORMAT_VERSION}"' in onnx


def test_the_page_lists_no_key_the_contract_lacks():
    # every bullet of the metadata section starts with a key of the contract
    bullets = re.findall(r"^- `([a-z_0-9]+)`", _section("metadata_props", "The names above"), re.M)
    assert bullets and set(bullets) <= set(contract.METADATA_KEYS)


def test_an_export_writes_only_contract_keys_and_every_required_one(tiny_onnx_model):
    from model.export import read_metadata

    written = set(read_metadata(tiny_onnx_model))
    assert set(contract.REQUIRED_METADATA) <= written
    assert written <= set(contract.METADATA_KEYS), written - set(contract.METADATA_KEYS)


def test_providers_are_parsed_once():
    assert contract.parse_providers(None) is None
    assert contract.parse_providers("") is None
    assert contract.parse_providers("auto") is None and contract.parse_providers(["AUTO"]) is None
    assert contract.parse_providers("cuda, cpu") == ["cuda", "cpu"]
    assert contract.parse_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
