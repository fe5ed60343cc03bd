"""A page outbox in a process of its own, for kill -9 tests.

``python -m tests.pager_proc DB PAGING_JSON [MESSAGE_JSON]`` opens the state store DB,
queues MESSAGE (if given) for every configured integration, prints ``queued <bool>``, and
runs the dispatcher until killed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from monitord.edge.metrics import Metrics
from monitord.paging.outbox import Dispatcher, Outbox
from monitord.records.state import SQLiteStore
from remediation.pagers import Message, PagingConfig


async def main(db: str, paging_json: str, message_json: str | None) -> None:
    store = SQLiteStore(db)
    paging = PagingConfig.model_validate(json.loads(paging_json))
    outbox = Outbox(store)
    if message_json:
        message = Message.from_json(message_json)
        for name in paging.integrations:
            print("queued", await outbox.enqueue(name, message), flush=True)
    dispatcher = Dispatcher(outbox, paging, Metrics(), poll=0.2)
    print("dispatching", flush=True)
    try:
        await dispatcher.run()
    finally:
        await dispatcher.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    asyncio.run(main(*sys.argv[1:3], sys.argv[3] if len(sys.argv) > 3 else None))
