"""`speech-train`: synthesize the data, train/derive the model versions, write ONNX files and cards.

Example: `speech-train --versions v1,v2,v3,v4,v5` (about 15 min on 2 shared cores, data cached).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import pathlib
import shutil
import sys
import time

from speech_serving.training import cards, clipset, synth
from speech_serving.training.dataset import SLICES, DataConfig, compute_slice, ensure_corpus
from speech_serving.training.evaluate import compute_agreement, compute_features, evaluate_model
from speech_serving.training.reference import REFERENCE_MAX_CLIPS, compute_version_references, fetch_reference
from speech_serving.training.versions import VERSIONS, compute_existing_build, ensure_version

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent.parent
log = logging.getLogger("speech_serving.training")


def _versions(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in VERSIONS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(VERSIONS)}, got {text!r}")
    return sorted(names, key=list(VERSIONS).index)  # derived versions need their bases first


def _bounded(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer {low}..{high}, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    defaults = DataConfig()
    p = argparse.ArgumentParser(prog="speech-train", description=__doc__.splitlines()[0])
    p.add_argument(
        "--versions",
        type=_versions,
        default=list(VERSIONS),
        help="versions to (re)build, comma list (default: all); the other versions found in "
        "--out-dir are re-evaluated so every card compares against the current v2",
    )
    p.add_argument("--out-dir", type=pathlib.Path, default=PACKAGE_DIR / "models", help="ONNX files and cards")
    p.add_argument(
        "--clips-file",
        type=pathlib.Path,
        default=PACKAGE_DIR / "clips" / "clips.npz",
        help="where the evaluation clip set is written",
    )
    p.add_argument("--clips-only", action="store_true", help="only rebuild the evaluation clip set")
    p.add_argument("--no-clips", action="store_true", help="do not rewrite the clip set")
    p.add_argument("--clips-per-label", type=_bounded(1, 100), default=4, help="clips per label and slice")
    p.add_argument("--workers", type=_bounded(1, 2), default=2, help="synthesis processes (1..2)")
    p.add_argument("--seed", type=_bounded(0, 2**31), default=defaults.seed, help="data seed (voices, words, noise)")
    p.add_argument(
        "--train-per-class",
        type=_bounded(10, 100000),
        default=defaults.train_per_class,
        help="synthesized training words per keyword",
    )
    p.add_argument(
        "--eval-per-class",
        type=_bounded(5, 10000),
        default=defaults.eval_per_class,
        help="evaluation words per keyword and slice",
    )
    p.add_argument(
        "--reference-only",
        action="store_true",
        help="only (re)compute the reference distribution of the --versions found in --out-dir (their training "
        "inputs through the server's pipeline) and write it into their cards; no training, no re-evaluation",
    )
    p.add_argument(
        "--reference-clips",
        type=_bounded(100, 100000),
        default=REFERENCE_MAX_CLIPS,
        help="at most this many training clips per reference (every k-th in training order)",
    )
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING"], default="INFO")
    return p


def _data_card(corpus, config: DataConfig) -> dict:
    return {
        "summary": (
            f"espeak-ng words, {len(corpus.train_voices)} training voice variants, evaluation on "
            f"{len(corpus.test_voices)} unseen variants (split by family); 8 English accents, "
            "speed 120–230 wpm, pitch 0–99; 1 s 16 kHz clips"
        ),
        "config": dataclasses.asdict(config),
        "espeak": synth.fetch_espeak_version(),
        "train_voices": [v.name for v in corpus.train_voices],
        "test_voices": [v.name for v in corpus.test_voices],
    }


def check_prerequisites(clips_only: bool) -> list[str]:
    """What is missing to run, as messages a person can act on (empty when ready)."""
    problems = [
        f"`{tool}` not found on PATH: install the Debian packages espeak-ng and sox (`make sysdeps`)"
        for tool in ("espeak-ng", "sox")
        if shutil.which(tool) is None
    ]
    if not clips_only and importlib.util.find_spec("onnx") is None:
        problems.append("python package `onnx` missing: `pip install -e '.[train]'`")
    return problems


def run(args: argparse.Namespace) -> int:
    problems = check_prerequisites(args.clips_only)
    if problems:
        print("speech-train: " + "; ".join(problems), file=sys.stderr)
        return 2
    config = DataConfig(seed=args.seed, train_per_class=args.train_per_class, eval_per_class=args.eval_per_class)
    started = time.monotonic()
    corpus = ensure_corpus(config, args.workers)
    if args.reference_only:  # the clip set, slices and evaluation stay as they are
        return apply_references(args, corpus)
    slices = {name: compute_slice(corpus, name, config.seed) for name in SLICES + ("silence",)}
    log.info("corpus and slices ready in %.0f s", time.monotonic() - started)
    if not args.no_clips:
        size = clipset.apply_clip_set(
            slices, args.clips_file, args.clips_per_label, 2 * args.clips_per_label, config.seed
        )
        log.info("clip set %s: %d bytes", args.clips_file, size)
    if args.clips_only:
        return 0
    features = {name: (compute_features(slices[name].audio), slices[name].labels) for name in SLICES}
    builds = [ensure_version(name, corpus, args.out_dir) for name in args.versions]
    builds += [
        compute_existing_build(name, args.out_dir)
        for name in VERSIONS
        if name not in args.versions and (args.out_dir / f"{name}.onnx").exists()
    ]
    builds.sort(key=lambda b: list(VERSIONS).index(b["version"]))
    reference = evaluate_model(args.out_dir / "v2.onnx", features) if (args.out_dir / "v2.onnx").exists() else None
    references = _carried_references(builds, args.out_dir)
    references |= compute_version_references(args.versions, corpus, args.out_dir, args.reference_clips)
    new_cards = []
    for build in builds:
        evaluation = evaluate_model(args.out_dir / build["file"], features)
        agreement = compute_agreement(evaluation, reference) if reference and build["version"] != "v2" else None
        card = cards.compute_card(
            build, evaluation, agreement, _data_card(corpus, config), args.out_dir / build["file"]
        )
        if build["version"] in references:
            card["reference"] = references[build["version"]]
        new_cards.append(card)
    cards.apply_cards(args.out_dir, new_cards)
    print(cards.compute_summary_table(new_cards))
    log.info("done in %.0f s", time.monotonic() - started)
    return 0


def _carried_references(builds: list[dict], out_dir: pathlib.Path) -> dict[str, dict]:
    """The references of versions re-evaluated but not rebuilt, kept from their cards (same file, same inputs)."""
    kept = {}
    for build in builds:
        found, _ = fetch_reference(out_dir / build["file"])
        if found is not None:
            kept[build["version"]] = json.loads((out_dir / f"{build['version']}.json").read_text())["reference"]
    return kept


def apply_references(args: argparse.Namespace, corpus) -> int:
    """--reference-only: the listed versions' cards get a fresh `reference`; nothing else in them changes."""
    names = [name for name in args.versions if (args.out_dir / f"{name}.json").exists()]
    missing = sorted(set(args.versions) - set(names))
    if missing:
        log.info("no card for %s in %s: skipped (build them first)", ", ".join(missing), args.out_dir)
    fresh = compute_version_references(names, corpus, args.out_dir, args.reference_clips)
    updated = []
    for name in names:
        card = json.loads((args.out_dir / f"{name}.json").read_text())
        card["reference"] = fresh[name]
        updated.append(card)
        log.info("%s: reference of %d clips, answers %s", name, fresh[name]["n"], fresh[name]["predictions"])
    cards.apply_cards(args.out_dir, updated)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
