"""Prompt sets: load minimal pairs from CSV/JSONL, render them, tokenize them, check them.

A prompt set is in long format, one row per (pair, condition); the built-in set has 48 claims,
each said by a certain user ("definitely"), an uncertain user ("probably") and a neutral one.
Rendering goes through the model's chat template as a user turn (the default), or is raw text
with the tokenizer's BOS (`prompts.chat_template=false`, what the study's notebooks did, so the
model continues the user's sentence instead of answering it).

Token positions are never inferred from an attention mask: every prompt is tokenized on its own,
unpadded, and its last position is `len(ids) - 1`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from hallu.config import PromptsCfg, SweepCfg
from hallu.errors import UserError
from hallu.prompt_ladder import check_ladder, numbered

CONDITIONS = ("certain", "uncertain", "neutral")


@dataclass(frozen=True)
class PromptPair:
    """One claim in each condition; `texts` maps certain/uncertain[/neutral] to the user's text."""

    pair_id: str
    texts: dict[str, str]


# hallu's own prompt sets, by the name prompts.path may give instead of a file.
BUILTIN_SETS = ("builtin", "marker_ladder", "templates")

# Llama-2-chat's default system prompt (Meta's reference chat code), by the name
# prompts.system_prompt=llama2_default; any other string is used as the system prompt itself.
LLAMA2_DEFAULT_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as "
    "possible, while being safe. Your answers should not include any harmful, unethical, "
    "racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses "
    "are socially unbiased and positive in nature.\n\nIf a question does not make any sense, "
    "or is not factually coherent, explain why instead of answering something not correct. If "
    "you don't know the answer to a question, please don't share false information."
)
SYSTEM_PRESETS = {"llama2_default": LLAMA2_DEFAULT_SYSTEM}


def builtin_path(name: str = "builtin") -> Path:
    return Path(str(resources.files("hallu") / "data" / f"prompts_{name}.csv"))


def prompt_path(cfg: PromptsCfg) -> Path:
    path = builtin_path(cfg.path) if cfg.path in BUILTIN_SETS else Path(cfg.path).expanduser()
    if not path.is_file():
        raise UserError(f"prompts.path={cfg.path}: no such file; give a CSV or JSONL file")
    return path


def read_rows(cfg: PromptsCfg) -> tuple[Path, str, Rows]:
    """(path, format, rows) of the prompt file, each row a dict of its columns."""
    path = prompt_path(cfg)
    fmt = cfg.format if cfg.format != "auto" else _guess_format(path)
    return path, fmt, _read_rows(path, fmt)


def load_pairs(cfg: PromptsCfg) -> list[PromptPair]:
    """Read the prompt file into pairs, in file order; any defect is one UserError naming it."""
    path, fmt, rows = read_rows(cfg)
    if not rows:
        raise UserError(f"prompts.path={path}: the file has no rows; add one per pair x condition")
    cols = cfg.columns.model_dump()
    missing = [
        f"{key} (prompts.columns.{key}={name!r})"
        for key, name in cols.items()
        if name not in rows[0]
    ]
    if missing:
        raise UserError(
            f"prompts.path={path}: missing column(s) {', '.join(missing)}; the file has columns "
            f"{sorted(rows[0])}. Fix: rename the column or set prompts.columns.<key>=<your name>"
        )
    label_to_cond = {label: cond for cond, label in cfg.conditions.model_dump().items()}
    # A file with marker strengths (a ladder) holds more rungs than the pair uses: the rungs
    # not named by prompts.conditions are read by the mechanism experiment only.
    ladder = "strength" in rows[0]
    if ladder:
        check_ladder(path, rows, cols, cfg)
    pairs: dict[str, dict[str, str]] = {}
    for i, row in numbered(rows):
        pid, label = (str(row.get(cols[k]) or "").strip() for k in ("pair_id", "condition"))
        text = row_text(row, cols)
        where = f"prompts.path={path}, line {i}"
        if not pid or not text.strip():
            raise UserError(f"{where}: empty pair id or text; every row needs both")
        if ladder and label not in label_to_cond:
            continue
        if label not in label_to_cond:
            raise UserError(
                f"{where}: condition {label!r} is not one of {sorted(label_to_cond)}; "
                "fix the row or map your labels with prompts.conditions.certain=<label> etc."
            )
        cond = label_to_cond[label]
        if cond in pairs.setdefault(pid, {}):
            raise UserError(f"{where}: pair {pid!r} has a second {cond!r} row; keep one")
        pairs[pid][cond] = text
    for pid, texts in pairs.items():
        lacking = [c for c in ("certain", "uncertain") if c not in texts]
        if lacking:
            raise UserError(
                f"prompts.path={path}: pair {pid!r} has no {' or '.join(lacking)} row; "
                "every pair needs both a certain and an uncertain text"
            )
    return [PromptPair(pid, texts) for pid, texts in pairs.items()]


def row_text(row: dict[str, Any], cols: dict[str, str]) -> str:
    """A row's text exactly as the file holds it: no stripping, so the model sees the bytes
    the author wrote (a trailing line break or U+2028 included)."""
    text = row.get(cols["text"])
    return "" if text is None else str(text)


def select_pairs(pairs: list[PromptPair], sweep: SweepCfg) -> list[PromptPair]:
    if sweep.pairs == "all":
        return pairs
    if isinstance(sweep.pairs, int):
        if sweep.pairs > len(pairs):
            raise UserError(
                f"sweep.pairs={sweep.pairs}, but the prompt set has {len(pairs)} pairs; "
                f"use sweep.pairs=all or a number <= {len(pairs)}"
            )
        return pairs[: sweep.pairs]
    by_id = {p.pair_id: p for p in pairs}
    unknown = [pid for pid in sweep.pairs if pid not in by_id]
    if unknown:
        raise UserError(
            f"sweep.pairs: unknown pair id(s) {unknown}; the set has e.g. {list(by_id)[:5]}"
        )
    return [by_id[pid] for pid in sweep.pairs]


def render(tokenizer: Any, text: str, cfg: PromptsCfg) -> list[int]:
    """Token ids of one user text as the model will see it (no padding, BOS included)."""
    if not cfg.chat_template:
        return list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "prompts.chat_template=true, but this model's tokenizer has no chat template; "
            "use a chat model, or set prompts.chat_template=false to feed raw text"
        )
    messages = [{"role": "user", "content": text}]
    if cfg.system_prompt:
        system = SYSTEM_PRESETS.get(cfg.system_prompt, cfg.system_prompt)
        messages.insert(0, {"role": "system", "content": system})
    try:
        rendered = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
    except TemplateError as err:  # e.g. Gemma-2's template has no system role
        raise UserError(
            f"prompts: this model's chat template refuses the prompt ({err}); "
            "set prompts.system_prompt=null if it is the system prompt"
        ) from None
    # The template already holds BOS; adding special tokens again would double it.
    return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def tokenize_pairs(
    tokenizer: Any, pairs: list[PromptPair], cfg: PromptsCfg
) -> dict[str, dict[str, list[int]]]:
    return {p.pair_id: {c: render(tokenizer, t, cfg) for c, t in p.texts.items()} for p in pairs}


def user_span(tokenizer: Any, text: str, cfg: PromptsCfg) -> tuple[int, int] | None:
    """(first, last) token index of the user's own text inside the rendered prompt.

    Found from the tokenizer's character offsets on the rendered string (the template copies
    the text verbatim); None when the tokenizer gives no offsets or the text is not found."""
    if cfg.chat_template:
        messages = [{"role": "user", "content": text}]
        if cfg.system_prompt:
            messages.insert(0, {"role": "system", "content": cfg.system_prompt})
        string = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        special = False
    else:
        string, special = text, True
    start = string.rfind(text)  # rfind: a system prompt may repeat the text's words
    try:
        enc = tokenizer(string, add_special_tokens=special, return_offsets_mapping=True)
    except (NotImplementedError, ValueError):  # slow tokenizers have no offsets
        return None
    inside = [
        i
        for i, (a, b) in enumerate(enc["offset_mapping"])
        if b > a and a < start + len(text) and b > start
    ]
    return (inside[0], inside[-1]) if start >= 0 and inside else None


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two prompts' tokens differ: a minimal pair's marker."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def prompt_anchors(
    tokenizer: Any,
    pairs: list[PromptPair],
    cfg: PromptsCfg,
    token_ids: dict[str, dict[str, list[int]]],
) -> dict[str, dict[str, dict[str, int | None]]]:
    """pair id -> condition -> the template anchors of that prompt (token positions):
    user (first token of the user's text), marker (where certain and uncertain differ),
    user_end (last token of the user's text), last (last prompt token)."""
    out: dict[str, dict[str, dict[str, int | None]]] = {}
    for p in pairs:
        ids = token_ids[p.pair_id]
        marker = first_difference(ids["certain"], ids["uncertain"])
        out[p.pair_id] = {}
        for cond, text in p.texts.items():
            span = user_span(tokenizer, text, cfg)
            out[p.pair_id][cond] = {
                "user": span[0] if span else None,
                "marker": marker if cond != "neutral" else None,
                "user_end": span[1] if span else None,
                "last": len(ids[cond]) - 1,
            }
    return out


def single_token_id(tokenizer: Any, text: str, key: str) -> int:
    """The id of `text` as it appears after other text (so " is" is the word, with its space);
    text with no leading space as it appears at the start of a line ("Yes" after a template's
    newline)."""
    before = "a" if text[:1].isspace() else "\n"
    prefix = tokenizer(before, add_special_tokens=False)["input_ids"]
    ids = tokenizer(before + text, add_special_tokens=False)["input_ids"]
    tail = ids[len(prefix) :] if ids[: len(prefix)] == prefix else ids
    if len(tail) != 1 or tail[0] == getattr(tokenizer, "unk_token_id", None):
        pieces = tokenizer.convert_ids_to_tokens(tail)
        raise UserError(
            f"{key}: {text!r} is not a single known token of this tokenizer (it gives {pieces}); "
            "use words that are one token each"
        )
    return tail[0]


def _guess_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise UserError(
        f"prompts.path={path}: cannot tell the format from '{suffix}'; "
        "set prompts.format=csv or prompts.format=jsonl"
    )


class Rows(list[dict[str, Any]]):
    """A prompt file's rows in file order, each a dict of its columns, with `lines`: the
    physical line (1-based) each row starts on, so messages name the line an editor shows even
    after a quoted text spanned several lines."""

    def __init__(self, rows: list[dict[str, Any]], lines: list[int]):
        super().__init__(rows)
        self.lines = lines


def _read_rows(path: Path, fmt: str) -> Rows:
    # Decode the bytes ourselves (not a text-mode file) so a bad byte is named by its offset;
    # utf-8-sig drops the byte-order mark Excel and Notepad put before the header.
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(
            f"prompts.path={path}: not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    return _read_csv(path, text) if fmt == "csv" else _read_jsonl(path, text)


def _read_csv(path: Path, text: str) -> Rows:
    """CSV as the format defines it: newline='' keeps line breaks inside quoted texts (and
    U+2028, U+0085, which only str.splitlines treats as breaks) byte for byte."""
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    reader = csv.reader(io.StringIO(text, newline=""), dialect=dialect)
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    header: list[str] | None = None
    end = 0  # the last physical line the reader consumed
    try:
        for fields in reader:
            start, end = end + 1, reader.line_num
            if not fields:
                continue  # a blank line, as csv.DictReader skips it
            if header is None:
                header = fields
                continue
            if len(fields) > len(header):
                raise UserError(
                    f"prompts.path={path}, line {start}: more fields than the header has; quote "
                    'texts that contain commas ("like, this")'
                )
            padded = fields + [None] * (len(header) - len(fields))  # DictReader's restval
            rows.append(dict(zip(header, padded, strict=True)))
            lines.append(start)
    except csv.Error as err:
        raise UserError(
            f"prompts.path={path}, line {reader.line_num}: malformed CSV ({err}); "
            'quote texts with "double quotes" and double any quote inside them'
        ) from None
    return Rows(rows, lines)


def _read_jsonl(path: Path, text: str) -> Rows:
    """JSONL records are separated by line feeds only: str.splitlines would also cut at U+2028,
    U+0085 and the like, which JSON allows raw inside a string."""
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip(" \t\r"):  # JSON's own whitespace; CRLF files end lines in '\r'
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(
                f"prompts.path={path}, line {i}: not valid JSON ({err.msg}); "
                "JSONL needs one object per line"
            ) from None
        if not isinstance(obj, dict):
            raise UserError(f"prompts.path={path}, line {i}: expected a JSON object per line")
        rows.append(obj)
        lines.append(i)
    return Rows(rows, lines)


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens two prompts have in common."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
