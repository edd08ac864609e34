import threading
import time

from engine.service import Cancelled
from spatialavatar_app.app.jobs import Jobs


def wait(jobs):
    jobs.join(10)
    return jobs.drain()


def test_a_job_reports_progress_then_its_result():
    jobs = Jobs()
    assert jobs.start("count", lambda r: (r.progress(0.5, "half"), 42)[1])
    events = wait(jobs)
    assert [(e.kind, e.fraction) for e in events] == [("progress", 0.5), ("done", 1.0)]
    assert events[-1].value == 42 and events[0].text == "half"


def test_a_failure_becomes_a_message():
    jobs = Jobs()
    jobs.start("bad", lambda r: 1 / 0)
    (ev,) = wait(jobs)
    assert ev.kind == "failed" and "bad failed: division by zero" in ev.text


def test_cancel_and_busy():
    jobs = Jobs()
    started = threading.Event()

    def work(r):
        started.set()
        while not r.cancel.is_set():
            time.sleep(0.01)
        raise Cancelled()

    assert jobs.start("long", work)
    started.wait(5)
    assert jobs.busy and not jobs.start("other", lambda r: None)     # one at a time
    jobs.cancel()
    (ev,) = wait(jobs)
    assert ev.kind == "cancelled" and not jobs.busy
