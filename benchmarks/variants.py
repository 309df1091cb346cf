"""Build all four model variants from one training run and compare them (``make variants``).

    python -m benchmarks.variants [--duration 5] [--note '...']

Each variant is exported and archived in build/variants/<variant>/ (model_store/ is left to
``make archive``), then measured in the same run on the same machine:

- quality: test accuracy and macro-F1 (the card's, from the variant's own predictions) and the
  largest probability difference from the float (eager) model on the test split;
- size of the model file and of the .mar;
- in-process: load + first call, and ms per 1-row and per 1,000-row call with one thread, through
  the very loader the handler uses (handlers.runtimes);
- served: single-row and 1,000-row JSON throughput through ``make bench``'s harness (its
  payloads, server, wrk runs; short durations), launch-to-first-answer and worker RSS.

Writes artifacts/variants.json and artifacts/variants.md. Absolute numbers on a shared 2-core
machine move between runs; compare the variants within one run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench import (
    JSON_CT,
    Payloads,
    _rate,
    check_answers,
    machine,
    make_payloads,
    memory,
    say,
    serving,
    wrk,
)
from common.model_card import VARIANTS, ModelCard
from model import archive, export, variants
from model.report import REPORT_FILES
from servectl.config.settings import REPO

ARTIFACTS = REPO / "artifacts"
BUILD = REPO / "build" / "variants"
TRAINING_OUTPUTS = ("checkpoint.pt", "test_split.pt", *REPORT_FILES)


@dataclass(frozen=True)
class Built:
    name: str
    folder: Path
    card: ModelCard
    mar: Path


def build_all(artifacts: Path, root: Path, model_name: str, version: str) -> list[Built]:
    """Every variant exported (its gates passed) and archived from the same training outputs."""
    out = []
    for name in VARIANTS:
        folder = root / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for f in TRAINING_OUTPUTS:
            shutil.copy2(artifacts / f, folder / f)
        card = export.export(model_name, version, folder, name)
        mar = archive.archive(folder, folder / "store", folder / "build")
        out.append(Built(name, folder, card, mar))
    return out


def quality(built: Built) -> dict[str, Any]:
    eager, _ = export.load_eager(built.folder)
    x = torch.load(built.folder / "test_split.pt", weights_only=True)["x"]
    loaded = variants.load(built.name, built.folder / built.card.model_file)
    diff = (variants.probabilities(eager, x) - variants.probabilities(loaded, x)).abs().max()
    test = built.card.metrics["test"]
    return {
        "accuracy": test["accuracy"],
        "macro_f1": test["macro"]["f1"],
        "max_probability_diff": float(diff),
        "tolerance": variants.RECIPES[built.name].tolerance,
        "model_file_bytes": (built.folder / built.card.model_file).stat().st_size,
        "mar_bytes": built.mar.stat().st_size,
        "runtime": built.card.runtime,
        "explanations": built.card.variant_info.autograd,
    }


def in_process(built: Built, seconds: float) -> dict[str, float]:
    """One thread, as a worker runs: load + first call, then ms per call of 1 and 1,000 rows."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    model = variants.load(built.name, built.folder / built.card.model_file, threads=1)
    with torch.inference_mode():
        model(torch.zeros(1, built.card.n_features))
        loaded = time.perf_counter() - start
        out = {"load_ms": loaded * 1e3}
        for n in (1, 1000):
            x = torch.randn(n, built.card.n_features)
            out[f"ms_per_call_{n}"] = 1e3 / _rate(partial(variants.probabilities, model, x), seconds)
    return out


def served(built: Built, payloads: Payloads, seconds: float) -> dict[str, Any]:
    """Through make bench's harness: its server, payloads and wrk; a short warm-up first."""
    with serving(built.card, payloads.single, model_store=built.mar.parent) as run:
        check_answers(run, payloads)
        wrk(run.predict_url, 16, seconds, "warm-up", payloads.single)
        single = wrk(run.predict_url, 16, seconds, "single", payloads.single)
        bulk = wrk(run.predict_url, 4, seconds, "bulk-json", payloads.bulk_json, JSON_CT, payloads.bulk_rows)
        workers = [m["rss_mib"] for m in memory(run.proc) if m["role"] == "worker (Python)"]
        return {
            "single_rps": single.rps,
            "single_p99_ms": single.p99_ms,
            "bulk_rows_per_s": bulk.rows_per_s,
            "errors": single.errors + bulk.errors,
            "first_answer_s": run.cold_start_s,
            "ready_s": run.ready_s,
            "worker_rss_mib": sum(workers) / max(len(workers), 1),
        }


def compare(args: argparse.Namespace) -> dict[str, Any]:
    card = ModelCard.load(args.artifacts / "metadata.json") if (args.artifacts / "metadata.json").is_file() else None
    name, version = (card.model_name, card.version) if card else ("tabular_classifier", "1.0")
    say(f"variants: exporting and archiving {', '.join(VARIANTS)} in {args.build}")
    built = build_all(args.artifacts, args.build, name, version)
    payloads = make_payloads(built[0].card, args.build / "payloads")
    rows: dict[str, dict[str, Any]] = {}
    for b in built:
        say(f"variants: {b.name}: quality and in-process timing")
        rows[b.name] = quality(b) | in_process(b, args.seconds)
    for b in built:
        say(f"variants: {b.name}: served ({args.duration:g}s single-row, {args.duration:g}s bulk)")
        rows[b.name] |= served(b, payloads, args.duration)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(args.note),
        "duration_s": args.duration,
        "variants": rows,
    }


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Measured {results['when']} on {m['cores']} cores ({m['cpu']}), torch {m['torch']}, "
        f"{results['duration_s']:g} s per served load. {m['note']}".rstrip(),
        "",
        "| variant | runtime | accuracy | macro-F1 | max prob. diff (gate) | model file | "
        "load + 1st call | 1 row in-process | 1,000 rows in-process | served 1-row req/s | served bulk rows/s | "
        "first answer | worker RSS | explanations |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in results["variants"].items():
        lines.append(
            f"| {name} | {r['runtime']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
            f"{r['max_probability_diff']:.2g} ({r['tolerance']:g}) | {r['model_file_bytes'] / 1024:.1f} KiB | "
            f"{r['load_ms']:.0f} ms | {r['ms_per_call_1'] * 1e3:.0f} µs | {r['ms_per_call_1000']:.2f} ms | "
            f"{r['single_rps']:.0f} | "
            f"{r['bulk_rows_per_s']:.0f} | {r['first_answer_s']:.1f} s | {r['worker_rss_mib']:.0f} MiB | "
            f"{'yes' if r['explanations'] else 'no (400)'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    parser.add_argument("--build", type=Path, default=BUILD)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per served load run")
    parser.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per in-process timing")
    parser.add_argument("--note", default="", help="a sentence about the machine's conditions")
    args = parser.parse_args(argv)
    try:
        results = compare(args)
    except variants.GateError as exc:
        print(f"variants: error: {exc}", file=sys.stderr)
        return 1
    (args.artifacts / "variants.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.artifacts / "variants.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
