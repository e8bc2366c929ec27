"""Many simultaneous SendDTMF on one line: first in, first out, never interleaved."""

from __future__ import annotations

import threading
from collections.abc import Callable

from flask import Flask

from gateway.keys import KEYS
from tests.conftest import call_api, simulated_line
from tests.support import decode_wav, needs_multimon


@needs_multimon
def test_simultaneous_requests_run_in_order_and_whole(make_app: Callable[..., Flask]) -> None:
    app = make_app([simulated_line(queue_size=64, time_scale=0.2)])
    gateway = app.extensions["dtmf_gateway"]
    worker = gateway.lines["line1"].worker
    call_id = call_api(app.test_client(), command="Call", Dialed="1").text("CallId")

    # Each request's keys are unique, so its place in the recording shows it.
    requests = [KEYS[i % 16] + KEYS[(i * 7 + 3) % 16] + KEYS[(i * 5 + 1) % 16] for i in range(30)]
    queued: list[str] = []
    queued_lock = threading.Lock()
    submit = worker.submit

    def recording_submit(job):  # type: ignore[no-untyped-def]
        # Note the order the line accepted the jobs in, as it accepts them.
        with queued_lock:
            future = submit(job)
            queued.append(threading.current_thread().name)
            return future

    worker.submit = recording_submit  # type: ignore[method-assign]
    start = threading.Barrier(len(requests))
    codes: dict[str, int] = {}

    def send(keys: str) -> None:
        client = app.test_client()
        start.wait()
        codes[keys] = call_api(client, command="SendDTMF", CallId=call_id, Keys=keys,
                               Party="all", Duration="40", Gap="50").code

    threads = [threading.Thread(target=send, args=(k,), name=k) for k in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(code == 200 for code in codes.values()), codes
    assert call_api(app.test_client(), command="HangUp", CallId=call_id).code == 200
    decoded = decode_wav(gateway.lines["line1"].recorder.path(call_id))
    # Every request whole and contiguous, in exactly the order the line queued them.
    sends = [name for name in queued if name in codes]
    assert sorted(sends) == sorted(requests)
    assert decoded == "".join(sends)
