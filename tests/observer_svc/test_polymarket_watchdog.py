"""observer_svc.polymarket_watchdog.FeedHealth: the watchdog's decisions, without a socket."""

from __future__ import annotations

from observer_svc.polymarket_watchdog import FeedHealth

P = 10.0


def test_silence_resubscribes_once_then_reconnects() -> None:
    h = FeedHealth()
    h.connected(["a", "b"], now=0.0)
    h.got_book("a")
    h.got_book("b")
    assert h.check(5.0, P, {"a", "b"}, []) == ([], None)
    assert h.check(10.0, P, {"a", "b"}, []) == ([(["a", "b"], "silence")], None)
    assert h.check(15.0, P, {"a", "b"}, []) == ([], None)  # waits one more period
    assert h.check(20.0, P, {"a", "b"}, [])[1] == "silence"
    h.data(21.0)  # data again: the silence clock restarts
    assert h.check(25.0, P, {"a", "b"}, []) == ([], None)


def test_missing_book_resubscribes_then_reconnects() -> None:
    h = FeedHealth()
    h.connected(["a", "b"], now=0.0)
    h.data(9.0)
    h.got_book("a")
    assert h.check(10.0, P, {"a", "b"}, []) == ([(["b"], "no_book")], None)
    h.data(15.0)
    assert h.check(15.0, P, {"a", "b"}, []) == ([], None)
    assert h.check(20.0, P, {"a", "b"}, [])[1] == "no_book"
    h.unsubscribed(["b"])
    assert h.check(30.0, P, {"a"}, []) == ([(["a"], "silence")], None)


def test_repaired_book_resynced_at_most_once_per_period_and_only_if_subscribed() -> None:
    h = FeedHealth()
    h.connected(["a"], now=0.0)
    h.got_book("a")
    h.data(1.0)
    assert h.check(2.0, P, {"a"}, ["a", "zz"]) == ([(["a"], "book_resync")], None)
    h.data(3.0)
    assert h.check(4.0, P, {"a"}, ["a"]) == ([], None)
    h.data(11.0)
    assert h.check(12.0, P, {"a"}, ["a"]) == ([(["a"], "book_resync")], None)
