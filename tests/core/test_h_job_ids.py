"""Single job ids take their random bits from a batch read ahead from the OS; a forked
child (a process-pool worker, a pre-forked web server) must never hand out its parent's."""

from __future__ import annotations

import os
import uuid

from chancy.job import new_job_id

RANDOM_BITS = (1 << 62) - 1


def test_a_forked_child_draws_other_random_bits_than_its_parent():
    new_job_id()  # the parent holds a batch read ahead
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write_end, b"".join(new_job_id().bytes for _ in range(100)))
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 4096):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    child = {uuid.UUID(bytes=data[i:i + 16]).int & RANDOM_BITS for i in range(0, len(data), 16)}
    parent = {new_job_id().int & RANDOM_BITS for _ in range(100)}
    assert len(child) == 100 and not child & parent


def test_single_ids_are_unique_and_increase():
    ids = [new_job_id() for _ in range(3000)]  # several batches of random words
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {i.version for i in ids} == {7} and {i.variant for i in ids} == {uuid.RFC_4122}
