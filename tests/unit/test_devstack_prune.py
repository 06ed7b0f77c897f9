"""Which topics `make test` prunes from a long-lived development broker (devstack.kafka)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from devstack.kafka import KafkaNode, idle_scratch_topics


def _partition(data: Path, topic: str, index: int, age_s: float) -> None:
    part = data / f"{topic}-{index}"
    part.mkdir(parents=True)
    segment = part / "00000000000000000000.log"
    segment.write_bytes(b"x")
    then = time.time() - age_s
    for path in (segment, part):
        os.utime(path, (then, then))


def test_only_idle_scratch_topics_are_pruned(tmp_path: Path) -> None:
    node = KafkaNode(home=tmp_path)
    data = node.data_dir
    _partition(data, "test.events.1a2b3c4d5e6f", 0, age_s=7200)
    _partition(data, "test.events.1a2b3c4d5e6f", 1, age_s=7200)
    _partition(data, "bench.e2e.c0ffee42.commands", 0, age_s=7200)
    _partition(data, "test.commands.0badc0ffee", 0, age_s=7200)
    _partition(data, "test.commands.0badc0ffee", 1, age_s=10)  # one partition written a moment ago: in use
    _partition(data, "billing.events", 0, age_s=7200)  # the product's own topics stay
    _partition(data, "__consumer_offsets", 0, age_s=7200)
    _partition(data, "custom.events.5e1f0c2a9b", 0, age_s=7200)  # configured by the developer: kept
    _partition(data, "experiments", 0, age_s=7200)  # no random tag: made on purpose, kept
    (data / "meta.properties").write_text("version=1\n")
    (data / "__cluster_metadata-0").mkdir()

    assert idle_scratch_topics(node, idle_s=3600, keep=["custom.events.5e1f0c2a9b"]) == [
        "bench.e2e.c0ffee42.commands",
        "test.events.1a2b3c4d5e6f",
    ]
    assert idle_scratch_topics(node, idle_s=3 * 3600) == []


def test_no_data_directory_means_nothing_to_prune(tmp_path: Path) -> None:
    assert idle_scratch_topics(KafkaNode(home=tmp_path / "absent"), idle_s=0) == []
