"""Feed simulator and recorded-data replayer speaking Binance's and Polymarket's wire formats.

Public API::

    SyntheticDriver(markets, seed, speed, epoch_ms, lead_lag, lag_s, ...)   # seeded generator
    RecordedDriver(binance=DIR|FILE, polymarket=CSV|[CSV..], speed=0, ...)  # real captures
    async with SimServer(driver, port=0) as srv: srv.port, srv.url          # asyncio
    with SimServerThread(driver) as st: st.url                              # from sync code
    token_ids(slug), condition_id(slug)                                      # deterministic ids

Point an observer at it with ``FUSION_FEED=sim FUSION_SIM_URL=<srv.url>`` (see
``Settings.venue_urls()``).
"""

from observer_svc.sim.core import Driver, PolyWindow
from observer_svc.sim.recorded import RecordedDriver
from observer_svc.sim.server import SimServer
from observer_svc.sim.synthetic import SyntheticDriver
from observer_svc.sim.thread import SimServerThread
from observer_svc.sim.wire_out import condition_id, token_ids

__all__ = [
    "Driver",
    "PolyWindow",
    "RecordedDriver",
    "SimServer",
    "SimServerThread",
    "SyntheticDriver",
    "condition_id",
    "token_ids",
]
