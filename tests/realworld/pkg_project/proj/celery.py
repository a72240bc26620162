import os

from chancy.compat import Celery

app = Celery("proj", broker=os.environ["CHANCY_DSN"])
app.conf.update(result_expires=3600)
app.autodiscover_tasks(["proj"])

if __name__ == "__main__":
    app.start()
