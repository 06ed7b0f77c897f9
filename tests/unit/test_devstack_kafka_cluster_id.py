"""The KRaft cluster id `devstack.kafka` formats a broker's storage with.

`kafka-storage format -t <id>` parses its arguments with argparse: an id starting with "-" is read
as an option and the format fails ("argument --cluster-id/-t: expected one argument"). One
base64url id in 64 starts with "-"; the chaos test and the test stack format a private broker on
every run, so a fresh broker failed to start about once in 64 runs.
"""

from __future__ import annotations

import base64

from devstack.kafka import _cluster_id


def test_cluster_ids_never_start_with_a_dash_and_are_kafka_uuids() -> None:
    ids = [_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    for i in ids[:100]:
        assert len(i) == 22 and len(base64.urlsafe_b64decode(i + "==")) == 16
    assert len(set(ids)) == len(ids)
