"""A producer host of the many-hosts tests: ``python -m topology_producer QUEUE COUNT``
pushes COUNT ``visit`` jobs (3 attempts each: a lost host costs one) in one statement (through ``CHANCY_DSN``, the pooler) and
prints their ids."""

import sys

from chancy import Job
from topology_app import app, visit


def main(queue: str, count: int) -> None:
    refs = app.push_many_sync([Job(visit, args=(n,), queue=queue, max_attempts=3) for n in range(count)])
    for ref in refs:
        print(ref.id)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
