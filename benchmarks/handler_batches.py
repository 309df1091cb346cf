"""The handler's cost per batch, in-process: the built .mar loaded by TorchServe's own loader
(as a worker loads it, the handler's settings and gc threshold included) and timed on the
batches the bulk figures send: six 1,000-row JSON requests (row and columnar answers), six
1,000-row .npy requests (.npy answers), one 5,000-row CSV chunk (as ``client score`` sends
it), 64 single rows and a lone one, and the lone one again after 2 ms asleep each time.
``make bench-handler``; the numbers behind round three's tuning table in benchmarks/README.md.
No HTTP, no frontend: what the worker's own code costs."""

from __future__ import annotations

import argparse
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from benchmarks.bench import ARTIFACTS, make_payloads, write_rows_csv
from benchmarks.tracing import MAR, load_service, print_load, timed
from common.model_card import METADATA_FILE, ModelCard

NPY = "application/x-npy"
COLUMNAR = "application/vnd.tabular.columnar+json"
LONE = "1 x 1 row JSON"
# a lone request's worker waits out the 1 ms batch window and more between requests: timed
# again after this long asleep, the handler's own time for the same row (benchmarks/README.md)
IDLE_S = 0.002


def requests_of(n: int, body: bytes, content_type: str, accept: str = "") -> list[dict[str, Any]]:
    """``n`` requests as TorchServe's worker hands them to the handler."""
    headers = [{"name": b"Content-Type", "value": content_type.encode()}]
    if accept:
        headers.append({"name": b"Accept", "value": accept.encode()})
    return [{"requestId": f"r{i}".encode(), "headers": headers,
             "parameters": [{"name": "body", "contentType": content_type, "value": body}]}
            for i in range(n)]  # fmt: skip


def batches(card: ModelCard, folder: Path) -> dict[str, list[dict[str, Any]]]:
    payloads = make_payloads(card, folder)
    rows_csv = folder / "rows.csv"
    write_rows_csv(rows_csv, card, 5000)
    bulk_json, bulk_npy = payloads.bulk_json.read_bytes(), payloads.bulk_npy.read_bytes()
    single = payloads.single.read_bytes()
    return {
        "6 x 1,000-row JSON, row answers": requests_of(6, bulk_json, "application/json"),
        "6 x 1,000-row JSON, columnar answers": requests_of(6, bulk_json, "application/json", COLUMNAR),
        "6 x 1,000-row .npy, .npy answers": requests_of(6, bulk_npy, NPY, NPY),
        "1 x 5,000-row CSV, .npy answer": requests_of(1, rows_csv.read_bytes(), "text/csv", NPY),
        "64 x 1 row JSON": requests_of(64, single, "application/json"),
        LONE: requests_of(1, single, "application/json"),
    }


def show(name: str, r: dict[str, float]) -> None:
    print(f"{name:40s} median {r['median_us']:8.1f} us  p99 {r['p99_us']:8.1f} us")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    print_load("before")
    card = ModelCard.load(ARTIFACTS / METADATA_FILE)
    with tempfile.TemporaryDirectory(prefix="bench-handler-") as tmp:
        model_dir = Path(tmp) / "model"
        zipfile.ZipFile(MAR).extractall(model_dir)
        service = load_service(model_dir, "", 64)
        timed_batches = batches(card, Path(tmp) / "payloads")
        for name, batch in timed_batches.items():
            answers = bytes(service.predict(batch))
            if struct.unpack("!i", answers[:4])[0] != 200 or b'"type":' in answers:  # an error body names its type
                raise SystemExit(f"bench-handler: {name}: not every request was answered: {answers[:300]!r}")
            show(name, timed(service, batch, args.rounds))
        lone = timed_batches[LONE]
        show(f"{LONE}, {IDLE_S * 1000:g} ms idle before each", timed(service, lone, args.rounds, IDLE_S))
    print_load("after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
