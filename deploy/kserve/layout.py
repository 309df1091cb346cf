"""Lay out the storage KServe's TorchServe runtime expects, from the built .mar:

    build/kserve/config/config.properties
    build/kserve/model-store/<name>.mar

``make kserve-layout`` runs it; copy the folder to the bucket or volume that the
InferenceService's ``storageUri`` names (KServe mounts it at /mnt/models).
The config starts from serve_config/config.properties (security settings, limits) and
changes only what KServe's runtime needs: its ports, the mounted store, the model snapshot
its wrapper reads the model name from, env-var config (it sets the envelope that way:
``TS_SERVICE_ENVELOPE=kserve`` for protocol v1, ``kservev2`` for v2) and one request per
batch, all the envelopes handle. Threads per worker come from the .mar itself
(model-config.yaml's ``handler.torch_threads``), so nothing here sets them.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from common.model_card import METADATA_FILE, ModelCard
from servectl.config import model_config
from servectl.config.properties import read_properties, write_properties
from servectl.config.settings import CONFIG_PROPERTIES, REPO

MOUNT = "/mnt/models"  # where KServe's storage initializer puts storageUri's content
KSERVE_KEYS = {
    # KServe's wrapper answers on 8080 and forwards to TorchServe on 8085
    "inference_address": "http://0.0.0.0:8085",
    # the wrapper runs in the same container: management stays on loopback
    "management_address": "http://127.0.0.1:8081",
    "metrics_address": "http://0.0.0.0:8082",
    "grpc_inference_address": "0.0.0.0",
    "grpc_inference_port": "7070",
    "grpc_management_address": "127.0.0.1",
    "grpc_management_port": "7071",
    "model_store": f"{MOUNT}/model-store",
    "allowed_urls": r"file://.*/model-store/.*\.mar",  # the regex itself: write_properties escapes it
    "enable_envvars_config": "true",
    # a KServe revision serves the model of its storageUri: versions are revisions (canaryTrafficPercent)
    "enable_model_api": "false",
}
ENVELOPE_BATCH_SIZE = 1
# Keys that point into this repo: no meaning there (servectl's own keys, which KServe's image
# does not run, are in serve_config/servectl.yaml, not in config.properties).
DROPPED = ("metrics_config", "load_models")


def kserve_properties(card: ModelCard, mar_name: str) -> dict[str, str]:
    props = read_properties(CONFIG_PROPERTIES)
    for key in DROPPED:
        props.pop(key, None)
    props.update(KSERVE_KEYS)
    config = model_config.load()
    version = {
        "defaultVersion": True,
        "marName": mar_name,
        "minWorkers": config.min_workers,
        "maxWorkers": config.max_workers,
        "maxBatchDelay": config.max_batch_delay_ms,
        "responseTimeout": config.response_timeout_s,
        # KServe's envelopes read only the first request of a batch and return one answer:
        # TorchServe fails a batch of two or more with 503 (handlers/contract/envelopes.py).
        # The snapshot's value overrides the batchSize packed in the .mar.
        "batchSize": ENVELOPE_BATCH_SIZE,
    }
    snapshot = {"name": "startup.cfg", "modelCount": 1, "models": {card.model_name: {card.version: version}}}
    props["model_snapshot"] = json.dumps(snapshot, separators=(",", ":"))
    return props


def lay_out(out: Path, artifacts: Path = REPO / "artifacts", store: Path = REPO / "model_store") -> Path:
    """Write the layout into ``out`` (replacing it) and return ``out``."""
    card = ModelCard.load(artifacts / METADATA_FILE)
    mar = store / f"{card.model_name}.mar"
    if not mar.is_file():
        raise SystemExit(f"{mar} does not exist: run 'make archive' first")
    shutil.rmtree(out, ignore_errors=True)
    (out / "config").mkdir(parents=True)
    (out / "model-store").mkdir()
    shutil.copy2(mar, out / "model-store" / mar.name)
    props = kserve_properties(card, mar.name)
    write_properties(out / "config" / "config.properties", props)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "kserve")
    args = parser.parse_args(argv)
    out = lay_out(args.out)
    print(f"KServe storage layout in {out}: copy it to your storageUri")


if __name__ == "__main__":
    main()
