"""The key broker's directive after an epoch, asked on time or late."""

from __future__ import annotations

from enclaverec.distributed.keybroker import directive_after
from enclaverec.transport.proto import keybroker_pb2

CONTINUE, STOP = keybroker_pb2.CONTINUE, keybroker_pb2.STOP


def test_an_open_epoch_has_no_directive_yet():
    assert directive_after(3, closed=2, stopped=False, failed=False) is None


def test_a_closed_epoch_continues_until_the_job_stops_after_it():
    assert directive_after(2, closed=2, stopped=False, failed=False) == CONTINUE
    assert directive_after(3, closed=3, stopped=True, failed=False) == STOP


def test_a_late_ask_about_an_epoch_that_was_followed_by_another_continues():
    # A parameter server that waited out a key-broker restart asks about epoch 1 after the
    # workers finished epochs 2 and 3 and the job stopped: stopping at epoch 1 would leave
    # it without the best epoch's model (seen in CI as "the key broker chose epoch 2, of
    # which this server holds no copy").
    assert directive_after(1, closed=3, stopped=True, failed=False) == CONTINUE
    assert directive_after(2, closed=3, stopped=True, failed=False) == CONTINUE


def test_a_failed_job_stops_every_member():
    assert directive_after(1, closed=3, stopped=True, failed=True) == STOP
    assert directive_after(4, closed=3, stopped=True, failed=True) == STOP
