"""Model cards: one JSON card per version (the truth the tests read) and markdown rendered from it.

Also writes `index.json`, the small list of shipped versions with file sizes and checksums.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

from speech_serving.training.dataset import SLICES
from speech_serving.training.reference import compute_reference_lines

SLICE_TITLES = {
    "clean_male": "clean male",
    "young": "young (female, pitch 80–99)",
    "noisy": "noisy 0–10 dB",
    "other_mic": "other mic",
    "clean_all": "clean all",
}


def compute_card(
    build: dict, evaluation: dict[str, dict], agreement: dict | None, data: dict, path: pathlib.Path
) -> dict:
    """The JSON card: what went in (data, settings), what came out (per-slice figures), the file."""
    slices = {name: {k: v for k, v in result.items() if k != "predicted"} for name, result in evaluation.items()}
    for result in slices.values():
        result["label_mix"] = dict(list(result["label_mix"].items())[:4])  # the top few are enough
    card = {
        "version": build["version"],
        "description": build["summary"]["description"],
        "file": build["file"],
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "input": {"name": "features", "shape": ["batch", 40, "frames"], "dtype": "float32"},
        "output": {"name": "probabilities", "shape": ["batch", 12], "dtype": "float32"},
        "data": data,
        "training": build["summary"],
        "build_seconds": build["build_seconds"],
        "evaluation": slices,
    }
    if agreement is not None:
        card["agreement_with_v2"] = agreement
    return card


def _recipe_extras(recipe: dict) -> str:
    """The recipe fields that differ from the defaults older cards were written with."""
    extras = ""
    if recipe.get("max_pitch", 99) < 99:
        extras += f" at espeak-ng pitch ≤ {recipe['max_pitch']}"
    if recipe.get("exclude_families"):
        extras += f", without {', '.join(recipe['exclude_families'])}"
    if "snr_db" in recipe and list(recipe["snr_db"]) != [-3.0, 25.0]:
        low, high = recipe["snr_db"]
        extras += f"; noise p {recipe['p_noise']} at {low:g}…{high:g} dB SNR, band-pass p {recipe['p_mic']}"
    return extras


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def compute_markdown(card: dict) -> str:
    """Render a card as a short human-readable page."""
    training = card["training"]
    lines = [
        f"# Model card: speech-commands {card['version']}",
        "",
        card["description"] + ".",
        "",
        f"- File: `{card['file']}` ({card['bytes']:,} bytes, sha256 `{card['sha256'][:16]}…`)",
        "- Input `features` float32 [batch, 40, frames] (log-mel, see `speech_serving/features.py`); "
        "output `probabilities` float32 [batch, 12]; labels in the ONNX metadata `labels`.",
        f"- Data: {card['data']['summary']}",
    ]
    if "derived_from" in training:
        lines.append(f"- Derived from `{training['derived_from']}` without retraining.")
    else:
        recipe = training["recipe"]
        lines += [
            f"- Training: {training['examples']:,} examples (voices {'+'.join(recipe['genders'])}"
            f"{_recipe_extras(recipe)}, {recipe['augmented_copies']} augmented copies), {training['epochs']} epochs, batch "
            f"{training['batch_size']}, AdamW lr {training['learning_rate']} cosine, seed {training['seed']}, "
            f"shuffled labels: {training['shuffled_labels']}; {training['train_seconds']} s on 2 shared cores.",
            f"- Loss per epoch: {training['loss_per_epoch']}",
        ]
    lines += [
        "",
        "## Accuracy on unseen voices",
        "",
        "| slice | n | accuracy % | mean confidence | most frequent answers |",
        "|---|---|---|---|---|",
    ]
    for name in SLICES:
        result = card["evaluation"].get(name)
        if result is None:
            continue
        # by share: a card read back from its JSON (sort_keys) has the mix in label order
        top = sorted(result["label_mix"].items(), key=lambda kv: -kv[1])[:3]
        mix = ", ".join(f"{k} {_pct(v)}%" for k, v in top)
        lines.append(
            f"| {SLICE_TITLES[name]} | {result['n']} | {_pct(result['accuracy'])} | "
            f"{result['mean_confidence']:.2f} | {mix} |"
        )
    if "agreement_with_v2" in card:
        agreement = card["agreement_with_v2"]
        agree = ", ".join(f"{k} {_pct(agreement[k])}%" for k in SLICES if k in agreement)
        lines += ["", f"Agreement with v2's answers (what a shadow comparison sees): {agree}."]
    if "reference" in card:
        lines += compute_reference_lines(card["reference"])
    return "\n".join(lines) + "\n"


def compute_summary_table(cards: list[dict]) -> str:
    """The combined version × slice accuracy table (markdown) for docs/models.md."""
    head = "| model | " + " | ".join(SLICE_TITLES[s] for s in SLICES) + " | mean confidence (clean all) |"
    lines = [head, "|---" * (len(SLICES) + 2) + "|"]
    for card in cards:
        ev = card["evaluation"]
        cells = " | ".join(_pct(ev[s]["accuracy"]) for s in SLICES)
        lines.append(
            f"| {card['version']}: {card['description']} | {cells} | {ev['clean_all']['mean_confidence']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def apply_cards(out_dir: pathlib.Path, cards: list[dict]) -> None:
    """Write `<v>.json`, `<v>.md` and `index.json` (merging with versions not rebuilt this run)."""
    index_path = out_dir / "index.json"
    index: dict[str, Any] = (
        json.loads(index_path.read_text()) if index_path.exists() else {"model": "speech-commands", "versions": {}}
    )
    for card in cards:
        (out_dir / f"{card['version']}.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        (out_dir / f"{card['version']}.md").write_text(compute_markdown(card))
        index["versions"][card["version"]] = {
            "file": card["file"],
            "bytes": card["bytes"],
            "sha256": card["sha256"],
            "description": card["description"],
            "card": f"{card['version']}.json",
        }
    index["versions"] = dict(sorted(index["versions"].items()))
    index_path.write_text(json.dumps(index, indent=2) + "\n")
