"""Celery's "start the worker from Python" form: ``app.worker_main(argv)``, with the app
imported from the tutorial module. Extra arguments (``-P thread``) are passed on."""

import sys

from tasks import app

if __name__ == "__main__":
    app.worker_main(["worker", "--loglevel=INFO", *sys.argv[1:]])
