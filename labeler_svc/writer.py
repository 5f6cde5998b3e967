"""Label writer: a thread that XADDs labels and XACKs their states, atomically, in order.

Each job is one market's consecutive labels. A Lua script XADDs them (an ID refused as not
above the top was written before: a duplicate) and XACKs every state it handled; it stops at
the first other error. The thread lets the service decode and label the next batch while
Redis stores this one. After any failure the writer stays *failed* (and drops its queue) until
:meth:`LabelWriter.reset`: the service then rebuilds its state from the pending entries, which
are exactly the states without a label.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import redis

from common import keys
from common.log import log_once
from common.metrics import counter

log = logging.getLogger("labeler")

LABELS_WRITTEN = counter("fusion_labeler_labels_total", "labels written", ("market",))
LABELS_DUP = counter("fusion_labeler_label_duplicates_total", "labels refused as already written", ("market",))

# KEYS: labels stream, states stream. ARGV: group, then (id, payload) pairs.
SCRIPT = """
local group = ARGV[1]
local n = (#ARGV - 1) / 2
local added, dup, done, err = 0, 0, 0, ''
local ids = {}
for i = 0, n - 1 do
  local id = ARGV[2 + 2 * i]
  local res = redis.pcall('XADD', KEYS[1], id, 'd', ARGV[3 + 2 * i])
  if type(res) == 'table' and res.err then
    if string.find(res.err, 'equal or smaller', 1, true) then
      dup = dup + 1
    else
      err = res.err
      break
    end
  else
    added = added + 1
  end
  done = done + 1
  ids[done] = id
end
local i = 1
while i <= done do
  local j = math.min(i + 999, done)
  redis.call('XACK', KEYS[2], group, unpack(ids, i, j))
  i = j + 1
end
return {added, dup, done, err}
"""


@dataclass(slots=True)
class WriteTotals:
    labelled: int = 0
    duplicates: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class LabelWriter:
    """Background writer; :meth:`put` blocks when ``depth`` jobs are queued (bounded memory)."""

    def __init__(self, client: redis.Redis, depth: int = 4) -> None:
        self.r = client
        self._script = client.register_script(SCRIPT)
        self._q: queue.Queue[tuple[str, str, str, list[Any]] | None] = queue.Queue(maxsize=depth)
        self.totals = WriteTotals()
        self.error: BaseException | None = None
        self._t = threading.Thread(target=self._loop, name="label-writer", daemon=True)
        self._t.start()

    def put(self, market: str, labels_key: str, states_key: str, ids: list[bytes], payloads: list[bytes]) -> None:
        if len(ids) != len(payloads):
            raise ValueError("ids and payloads differ in length")
        args: list[Any] = [keys.LABELER_GROUP] * (2 * len(ids) + 1)
        args[1::2] = ids
        args[2::2] = payloads
        self._q.put((market, labels_key, states_key, args))

    def flush(self) -> None:
        """Wait until every queued job is done (or dropped after a failure)."""
        self._q.join()

    def reset(self) -> None:
        self.flush()
        self.error = None

    def close(self) -> None:
        self._q.put(None)
        self._t.join(timeout=30)

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            try:
                if job is None:
                    return
                if self.error is None:
                    self._write(*job)
            except Exception as e:  # any failure: the service re-reads its pending entries
                self.error = e
            finally:
                self._q.task_done()

    def _write(self, market: str, labels_key: str, states_key: str, args: list[Any]) -> None:
        added, dup, done, err = self._script(keys=[labels_key, states_key], args=args)
        with self.totals.lock:
            self.totals.labelled += int(added)
            self.totals.duplicates += int(dup)
        LABELS_WRITTEN.labels(market).inc(int(added))
        if dup:
            LABELS_DUP.labels(market).inc(int(dup))
        if err:
            msg = err.decode() if isinstance(err, bytes) else str(err)
            log_once(log, f"xadd:{market}:{msg[:60]}", "label XADD failed; will retry", market=market, error=msg)
            raise RuntimeError(f"label XADD failed on {labels_key}: {msg}")
