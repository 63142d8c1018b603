import time

from tagifai.notify import post_message
from tests.http_receiver import Receiver, closed_port_url


def test_posts_slack_compatible_json():
    with Receiver() as receiver:
        deliveries = post_message([receiver.url], "model v2 improved")
    assert receiver.messages == [{"text": "model v2 improved"}]
    assert deliveries[0].ok and deliveries[0].attempts == 1


def test_retries_server_errors_then_succeeds():
    with Receiver(fail_first=2) as receiver:
        deliveries = post_message([receiver.url], "hello", retries=2, backoff=0.01)
    assert deliveries[0].ok and deliveries[0].attempts == 3
    assert receiver.messages == [{"text": "hello"}]


def test_receiver_down_is_reported_not_raised_and_bounded_in_time():
    started = time.perf_counter()
    with Receiver() as receiver:
        deliveries = post_message(
            [closed_port_url(), receiver.url], "x", retries=1, timeout=1.0, backoff=0.01
        )
    assert [d.ok for d in deliveries] == [False, True]
    assert deliveries[0].attempts == 2 and deliveries[0].detail == "ConnectError"
    assert "/hook" not in deliveries[0].url  # webhook paths are secrets: redacted
    assert time.perf_counter() - started < 10
