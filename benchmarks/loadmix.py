"""The mixed load of tests/support/loadmix.py by hand, against a running server (loopback only):

    python -m benchmarks.loadmix --url http://127.0.0.1:8080 --seconds 30
"""

from __future__ import annotations

import argparse
import json

from tests.support.loadmix import Mix, reference, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="inference address (loopback)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--invalid-share", type=float, default=0.3)
    args = parser.parse_args()
    x, probs, features, classes, name = reference()
    report = run(args.url, name, Mix(x, features, args.invalid_share), probs, classes, args.seconds, args.connections)
    print(json.dumps(report.summary(), indent=2))
    for r in report.problems[:10]:
        print("problem:", r.problem)
    return 1 if report.server_errors or report.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
