import threading

from server.pipeline.priority import CpuPriority


def test_background_work_waits_for_urgent_work_to_finish() -> None:
    priority = CpuPriority(max_pause_s=5.0)
    entered, release = threading.Event(), threading.Event()

    def urgent_work() -> None:
        with priority.urgent():
            entered.set()
            release.wait(5)

    worker = threading.Thread(target=urgent_work)
    worker.start()
    entered.wait(5)
    assert priority.busy
    threading.Timer(0.2, release.set).start()
    waited = priority.yield_to_urgent()
    worker.join()
    assert waited >= 0.15
    assert not priority.busy


def test_the_pause_is_bounded_so_background_work_never_starves() -> None:
    priority = CpuPriority(max_pause_s=0.05)
    with priority.urgent():
        waited = priority.yield_to_urgent()
    assert 0.04 <= waited < 1.0


def test_no_wait_when_idle_or_disabled() -> None:
    assert CpuPriority().yield_to_urgent() == 0.0
    disabled = CpuPriority(enabled=False, max_pause_s=5.0)
    with disabled.urgent():
        assert disabled.yield_to_urgent() == 0.0


def test_nested_urgent_work_counts() -> None:
    priority = CpuPriority()
    with priority.urgent():
        with priority.urgent():
            assert priority.busy
        assert priority.busy
    assert not priority.busy
