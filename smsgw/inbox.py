"""Mobile-originated messages (replies from handsets): from the carrier into the store.

The operator has had its answer once an MO is in the carrier's channel, so from there the
gateway must not drop it: a store error keeps the batch and tries again. `smsgw inbox` lists
what was stored.
"""

from __future__ import annotations

import logging
from typing import Final

import trio

from smsgw.carriers.base import MobileOriginated
from smsgw.store.base import Store, StoreClosed, StoreError

log = logging.getLogger("smsgw.inbox")

BATCH: Final = 256  # MOs stored together (one group commit)
RETRY_S: Final = 1.0


async def store_inbound(mo: trio.MemoryReceiveChannel[MobileOriginated], store: Store) -> None:
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
        while True:
            try:
                await store.insert_inbound(batch)
                break
            except StoreClosed:
                log.error("store closed: %d mobile-originated messages not stored", len(batch))
                return
            except StoreError as exc:
                log.error("storing %d MOs failed, retrying in 1 s: %s", len(batch), exc)
                await trio.sleep(RETRY_S)
