"""Mobile-originated messages (replies from handsets): from the carrier into the store.

The operator's deliver_sm is answered only once its MO is stored (`ReceivedMo`): a batch is
committed, then each MO is marked stored. When the store fails, the batch is marked not
stored (the operator is asked to send those again) rather than retried here. MOs whose
carrier stopped waiting are skipped: they will come again. `smsgw inbox` lists what was
stored.
"""

from __future__ import annotations

import logging
from typing import Final

import trio

from smsgw.carriers.base import ReceivedMo
from smsgw.store.base import InboundStore, StoreError

log = logging.getLogger("smsgw.inbox")

BATCH: Final = 256  # MOs stored together (one group commit)


async def store_inbound(mo: trio.MemoryReceiveChannel[ReceivedMo], store: InboundStore) -> None:
    """Store every MO from `mo`, in batches, until the carrier closes the channel."""
    while True:
        try:
            batch = [await mo.receive()]
        except trio.EndOfChannel:
            return
        while len(batch) < BATCH:
            try:
                batch.append(mo.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        waiting = [received for received in batch if not received.given_up]
        try:
            await store.insert_inbound([received.mo for received in waiting])
        except StoreError as exc:
            log.error("%d MOs not stored, the operator will send them again: %s", len(batch), exc)
            for received in waiting:
                received.not_stored()
            continue
        for received in waiting:
            received.stored()
