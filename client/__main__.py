"""Command line: ``python -m client {predict,explain,metadata,health}``.

    python -m client predict --csv rows.csv
    echo '[[...10 numbers...]]' | python -m client predict      # JSON rows on stdin
    echo '[[...10 numbers...]]' | python -m client explain --target beta --top 5
    python -m client metadata
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from client.api import Client, ClientConfig, Explanations, PredictionError, Predictions


def table(result: Predictions) -> str:
    """One line per row: index, label, then each class probability (names from the answer)."""
    if not result.rows:
        return "(no rows)"
    classes = list(result.rows[0].probabilities)
    width = max(6, *(len(c) for c in classes), *(len(r.label) for r in result.rows))
    head = f"{'row':>5}  {'label':<{width}}  " + "  ".join(f"{c:>{width}}" for c in classes)
    lines = [f"{result.model_name} {result.model_version}", head]
    for i, row in enumerate(result.rows):
        probs = "  ".join(f"{row.probabilities[c]:>{width}.4f}" for c in classes)
        lines.append(f"{i:>5}  {row.label:<{width}}  {probs}")
    return "\n".join(lines)


def explanation_table(result: Explanations, top: int | None = None) -> str:
    """Per row: the prediction, the class explained, then the features by absolute attribution
    (largest first) with their value at the baseline, and the completeness check."""
    lines = [f"{result.model_name} {result.model_version} ({result.method})"]
    for i, row in enumerate(result.rows):
        lines.append(
            f"row {i}: predicted {row.label} ({row.probabilities[row.label]:.4f}); explaining {row.target}: "
            f"p = {row.output_at_row:.4f} at the row, {row.output_at_baseline:.4f} at the baseline"
        )
        ranked = row.ranked()[:top] if top else row.ranked()
        width = max(7, *(len(name) for name, _ in ranked))
        lines.append(f"  {'feature':<{width}}  {'attribution':>12}  {'baseline':>12}")
        lines += [f"  {name:<{width}}  {value:>+12.6f}  {row.baseline[name]:>12.4g}" for name, value in ranked]
        total = sum(row.attributions.values())
        lines.append(
            f"  sum of all {len(row.attributions)}: {total:+.6f}; p(row) - p(baseline): "
            f"{row.output_at_row - row.output_at_baseline:+.6f} "
            f"(error {row.approximation_error:.1e}, {row.steps} steps)"
        )
    return "\n".join(lines)


def rows_from_stdin(text: str) -> Any:
    doc = json.loads(text)
    return doc["instances"] if isinstance(doc, dict) and "instances" in doc else doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["predict", "explain", "metadata", "health", "versions"])
    parser.add_argument("--csv", help="CSV file to score (one row per line, optional header)")
    parser.add_argument("--url", help="inference base URL (default $MODEL_URL or http://127.0.0.1:8080)")
    parser.add_argument("--management-url", help="management base URL (default http://127.0.0.1:8081)")
    parser.add_argument("--model", help="model name (default $MODEL_NAME or tabular_classifier)")
    parser.add_argument("--version", help="pin requests to this model version (default: the server's default)")
    parser.add_argument("--token", help="inference token, when the server wants one ($MODEL_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--target", help="explain: the class to explain (name or id; default the predicted one)")
    parser.add_argument("--top", type=int, help="explain: show only the N features with the largest attributions")
    args = parser.parse_args(argv)
    client = Client(ClientConfig.from_env(inference_url=args.url, management_url=args.management_url,
                                          model=args.model, token=args.token, version=args.version))
    try:
        if args.command == "versions":
            print(json.dumps(client.versions(), indent=2))
        elif args.command == "metadata":
            print(json.dumps(client.metadata(), indent=2))
        elif args.command == "health":
            health = client.health()
            print(json.dumps(health, indent=2))
            return 0 if health["ready"] else 1
        elif args.command == "explain":
            try:
                if args.csv:
                    explained = client.explain_csv(args.csv, target=args.target)
                else:
                    explained = client.explain(rows_from_stdin(sys.stdin.read()), target=args.target)
            except (ValueError, KeyError, OSError) as exc:
                print(f"client: error: cannot read the input: {exc}", file=sys.stderr)
                return 2
            if args.json:
                print(json.dumps([r.__dict__ for r in explained.rows], indent=2))
            else:
                print(explanation_table(explained, args.top))
        else:
            try:
                result = client.predict_csv(args.csv) if args.csv else client.predict(rows_from_stdin(sys.stdin.read()))
            except (ValueError, KeyError, OSError) as exc:
                print(f"client: error: cannot read the input: {exc}", file=sys.stderr)
                return 2
            if args.json:
                print(json.dumps([r.__dict__ for r in result.rows], indent=2))
            else:
                print(table(result))
    except PredictionError as exc:
        print(f"client: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
