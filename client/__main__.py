"""Command line: ``python -m client {predict,score,explain,metadata,health,versions}``.

    python -m client predict --csv rows.csv
    python -m client score rows.csv --out scored.csv             # a file of any size, in chunks
    echo '[[...10 numbers...]]' | python -m client predict      # JSON rows on stdin
    echo '[[...10 numbers...]]' | python -m client explain --target beta --top 5
    python -m client metadata
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
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


def read_input(args: argparse.Namespace, from_csv: Any, from_rows: Any) -> Any:
    """Call ``from_csv(path)`` for --csv, else ``from_rows(rows)`` with JSON rows from stdin;
    an unreadable input is the user's error (exit 2), not the server's."""
    try:
        return from_csv(args.csv) if args.csv else from_rows(rows_from_stdin(sys.stdin.read()))
    except (ValueError, KeyError, OSError) as exc:
        raise InputError(f"cannot read the input: {exc}") from exc


class InputError(Exception):
    """The command's input could not be read (exit status 2)."""


def print_rows(args: argparse.Namespace, rows: list[Any], as_table: str) -> int:
    print(json.dumps([r.__dict__ for r in rows], indent=2) if args.json else as_table)
    return 0


def cmd_predict(args: argparse.Namespace, client: Client) -> int:
    result = read_input(args, client.predict_csv, client.predict)
    return print_rows(args, result.rows, table(result))


def cmd_explain(args: argparse.Namespace, client: Client) -> int:
    explained = read_input(
        args,
        lambda path: client.explain_csv(path, target=args.target),
        lambda rows: client.explain(rows, target=args.target),
    )
    return print_rows(args, explained.rows, explanation_table(explained, args.top))


INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C (128 + SIGINT)


def cmd_score(args: argparse.Namespace, client: Client) -> int:
    """Exit 0 scored, 1 the server refused or failed a chunk, 2 the input (unreadable, or no data
    rows: nothing is sent and no output is written), 130 Ctrl-C (no output is written)."""
    from client.score import NoRows, ScoreError, score_file

    try:
        report = score_file(client.config, Path(args.file), Path(args.out), show_progress=not args.no_progress,
                            connections=args.connections, chunk_rows=args.chunk_rows, retries=args.retries)
    except ScoreError as exc:
        print(f"client: error: {exc}", file=sys.stderr)
        return 1
    except NoRows as exc:
        raise InputError(f"{exc}: nothing to score, {args.out} not written") from exc
    except OSError as exc:
        raise InputError(str(exc)) from exc
    except KeyboardInterrupt:
        print(f"client: interrupted: {args.out} not written", file=sys.stderr)
        return INTERRUPTED
    print(f"scored {report.rows:,} rows in {report.seconds:.2f} s ({report.rows_per_second:,.0f} rows/s, "
          f"{report.chunks} requests, {report.retries} resent) with model version {report.model_version}: {args.out}",
          file=sys.stderr)
    return 0


def cmd_metadata(args: argparse.Namespace, client: Client) -> int:
    print(json.dumps(client.metadata(), indent=2))
    return 0


def cmd_health(args: argparse.Namespace, client: Client) -> int:
    health = client.health()
    print(json.dumps(health, indent=2))
    return 0 if health["ready"] else 1


def cmd_versions(args: argparse.Namespace, client: Client) -> int:
    print(json.dumps(client.versions(), indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    """One subcommand each, every one taking the connection options after its name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="inference base URL (default $MODEL_URL or http://127.0.0.1:8080)")
    common.add_argument("--management-url", help="management base URL (default http://127.0.0.1:8081)")
    common.add_argument("--model", help="model name (default $MODEL_NAME or tabular_classifier)")
    common.add_argument("--version", help="pin requests to this model version (default: the server's default)")
    common.add_argument("--token", help="inference token, when the server wants one ($MODEL_TOKEN)")
    common.add_argument("--retry-seconds", type=float,
                        help="start no resend later than this after a call's first attempt (default 30)")
    rows = argparse.ArgumentParser(add_help=False)
    rows.add_argument("--csv", help="CSV file to send (one row per line, optional header); default JSON rows on stdin")
    rows.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cli = argparse.ArgumentParser(prog="python -m client", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = cli.add_subparsers(dest="command", required=True)
    commands.add_parser("predict", parents=[common, rows], help="labels and probabilities").set_defaults(
        func=cmd_predict)
    explain = commands.add_parser("explain", parents=[common, rows], help="feature attributions per row")
    explain.add_argument("--target", help="the class to explain (name or id; default the predicted one)")
    explain.add_argument("--top", type=int, help="show only the N features with the largest attributions")
    explain.set_defaults(func=cmd_explain)
    score = commands.add_parser("score", parents=[common], help="score a CSV file of any size in chunks")
    score.add_argument("file", help="the CSV file to score (one row per line, optional header)")
    score.add_argument("--out", required=True, help="where to write label,<class probabilities> per row, in order")
    score.add_argument("--connections", type=int, default=4, help="requests in parallel (default 4)")
    score.add_argument("--chunk-rows", type=int, default=5000, help="rows per request (default 5000)")
    score.add_argument("--retries", type=int, default=5,
                       help="resends of a chunk on a connection error, 503 or 'Worker died.' (default 5)")
    score.add_argument("--no-progress", action="store_true", help="no progress bar")
    score.set_defaults(func=cmd_score)
    for name, func, text in (("metadata", cmd_metadata, "the model card (management API)"),
                             ("health", cmd_health, "liveness, and READY workers where the management API answers"),
                             ("versions", cmd_versions, "the loaded versions and the default (management API)")):
        commands.add_parser(name, parents=[common], help=text).set_defaults(func=func)
    return cli


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    client = Client(ClientConfig.from_env(inference_url=args.url, management_url=args.management_url,
                                          model=args.model, token=args.token, version=args.version,
                                          retry_seconds=args.retry_seconds))
    try:
        return int(args.func(args, client))
    except InputError as exc:
        print(f"client: error: {exc}", file=sys.stderr)
        return 2
    except PredictionError as exc:
        print(f"client: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
