"""Prompt files read as their formats define them (issue 24): a quoted CSV text spanning lines,
U+2028 / U+0085 inside a text, a UTF-8 byte-order mark, CRLF line ends, raw U+2028 inside a JSONL
string. Each is written to a file, loaded, and its text compared exactly; a bad row's error
names the physical line an editor shows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hallu.config import PromptsCfg
from hallu.errors import UserError
from hallu.prompt_meta import load_prompt_rows
from hallu.prompts import load_pairs

ODD = {
    "newline": "Is the sky blue?\nIt is definitely blue, right?",
    "crlf_inside": "Is grass green?\r\nIt is definitely green, right?",
    "line_separator": "Is snow white?\u2028It is definitely white.",
    "next_line": "Is coal black?\u0085It is definitely black.",
    "paragraph_separator": "Is milk white?\u2029Definitely.",
    "surrounding_space": "  Is the sea salty?  ",
}


def _rows() -> list[dict[str, str]]:
    out = []
    for pid, text in ODD.items():
        out.append({"pair_id": pid, "condition": "certain", "text": text})
        out.append({"pair_id": pid, "condition": "uncertain", "text": text + " (probably)"})
    return out


def _write_csv(path: Path, rows: list[dict[str, str]], *, bom: bool, crlf: bool) -> None:
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        end = "\r\n" if crlf else "\n"
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator=end)
        writer.writeheader()
        writer.writerows(rows)


def _cfg(path: Path) -> PromptsCfg:
    return PromptsCfg(path=str(path))


def _check_texts(cfg: PromptsCfg) -> None:
    pairs = {p.pair_id: p.texts for p in load_pairs(cfg)}
    assert list(pairs) == list(ODD)
    for pid, text in ODD.items():
        assert pairs[pid]["certain"] == text, pid  # byte for byte
        assert pairs[pid]["uncertain"] == text + " (probably)", pid
    meta = {(r.pair_id, r.rung): r.text for r in load_prompt_rows(cfg)}
    assert meta[("newline", "certain")] == ODD["newline"]


@pytest.mark.parametrize("bom", [False, True], ids=["plain", "bom"])
@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_csv_texts_load_byte_for_byte(tmp_path, bom, crlf):
    path = tmp_path / "odd.csv"
    _write_csv(path, _rows(), bom=bom, crlf=crlf)
    _check_texts(_cfg(path))


@pytest.mark.parametrize("bom", [False, True], ids=["plain", "bom"])
def test_jsonl_with_raw_line_separators_loads_byte_for_byte(tmp_path, bom):
    path = tmp_path / "odd.jsonl"
    # ensure_ascii=False writes U+2028, U+0085 raw, as JSON allows; \n and \r are escaped.
    lines = [json.dumps(r, ensure_ascii=False) for r in _rows()]
    assert "\u2028" in "".join(lines)
    path.write_text(("\ufeff" if bom else "") + "\r\n".join(lines) + "\r\n", encoding="utf-8")
    _check_texts(_cfg(path))


def test_csv_error_names_the_physical_line(tmp_path):
    rows = _rows()
    # Rows 1..2 are the 'newline' pair, each spanning two lines; the header is line 1, so the
    # empty text of data row 3 starts on physical line 1 + 2 + 2 + 1 = 6.
    rows[2] = {**rows[2], "text": "   "}
    path = tmp_path / "bad.csv"
    _write_csv(path, rows, bom=True, crlf=False)
    with pytest.raises(UserError, match=r"bad\.csv, line 6: empty pair id or text"):
        load_pairs(_cfg(path))
    rows[2] = {**rows[2], "text": "ok", "condition": "maybe"}
    _write_csv(path, rows, bom=False, crlf=True)
    with pytest.raises(UserError, match=r"line 6: condition 'maybe' is not one of"):
        load_pairs(_cfg(path))


def test_csv_extra_field_names_its_physical_line(tmp_path):
    path = tmp_path / "extra.csv"
    path.write_text(
        'pair_id,condition,text\na,certain,"two\nlines"\na,uncertain,one, two\n', encoding="utf-8"
    )
    with pytest.raises(UserError, match=r"line 4: more fields than the header has"):
        load_pairs(_cfg(path))


def test_jsonl_error_names_the_physical_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = [json.dumps(r, ensure_ascii=False) for r in _rows()[:4]]
    path.write_text("\n".join([*good[:2], "", *good[2:], "{not json"]) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.jsonl, line 6: not valid JSON"):
        load_pairs(_cfg(path))


def test_missing_column_with_bom_is_not_reported(tmp_path):
    """The BOM is not part of the first column's name (it said 'missing column pair_id')."""
    path = tmp_path / "bom.csv"
    _write_csv(path, _rows()[:2], bom=True, crlf=True)
    assert [p.pair_id for p in load_pairs(_cfg(path))] == ["newline"]
