"""Plain, unregistered functions: a worker runs them by import path only when this
module is an allowed import (``--allow-import trust_plain``)."""

import os


def make_dir(path: str) -> str:
    os.mkdir(path)
    return path
