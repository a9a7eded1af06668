"""The producers' partitioner puts every key where aiokafka's default (the Java client's murmur2) puts it."""

from __future__ import annotations

import uuid

from aiokafka.partitioner import DefaultPartitioner

from signoff.runtime.kafka import KeyHashPartitioner


def test_same_partition_as_the_default_for_every_key_and_partition_count() -> None:
    partitioner, default = KeyHashPartitioner(remembered=50), DefaultPartitioner()
    keys = [str(uuid.uuid4()).encode() for _ in range(200)] + [b"", b"a", "gate/\u00e9".encode()]
    for count in (1, 3, 6, 12):
        partitions = list(range(count))
        for key in keys * 2:  # the second time from the remembered hash (or recomputed after a clear)
            assert partitioner(key, partitions, partitions) == default(key, partitions, partitions)


def test_remembers_at_most_the_limit() -> None:
    partitioner = KeyHashPartitioner(remembered=10)
    for index in range(25):
        partitioner(str(index).encode(), [0, 1], [0, 1])
    assert len(partitioner._hashes) <= 10


def test_a_record_without_key_goes_to_an_available_partition() -> None:
    partitioner = KeyHashPartitioner()
    assert {partitioner(None, [0, 1, 2], [2]) for _ in range(20)} == {2}
