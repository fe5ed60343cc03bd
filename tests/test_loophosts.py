"""Fake loopback hosts: concurrent test processes (xdist workers, other runs) never share a block."""

from __future__ import annotations

import pytest

from tests.loophosts import _claim_block
from tests.support import need_root

START = 4242
"""A starting block far from any pid-derived one of this machine's test processes."""


@pytest.mark.integration  # a privileged port: root
def test_a_block_held_by_another_socket_is_skipped_and_free_again_once_released():
    need_root()  # the claim binds a privileged port
    first, claim = _claim_block(START)
    try:
        second, other = _claim_block(START)
        other.close()
        assert second != first
    finally:
        claim.close()
    again, claim = _claim_block(START)
    claim.close()
    assert again == first
