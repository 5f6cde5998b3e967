"""Vectorised replay environment: many Polymarket windows (episodes) stepped in lockstep.

Episode k replays the recorded states of window k. At step t every active episode shows the
observation ``o_t`` = market features of its state t + agent features (has_position, side,
unrealised return), receives an action ``a_t`` and returns the reward ``r_t`` caused by that action:

* open (flat + BUY_UP/BUY_DOWN): buy ``stake / ask`` shares at the recorded ask of the token and pay
  the taker fee on top (cost = ``stake + fee``, the labeler's convention, so a trade held for the
  label's horizon realises exactly the label's reward); refused (no-op) when the ask is missing;
* close (holding + the opposite action): sell every share at the recorded bid, less the taker fee;
  refused when the bid is missing;
* at the episode's last state, after its action, an open position settles at the window's
  resolution (1 or 0 per share, no fee); when the resolution is unknown it is sold at the last bid.

Rewards: ``realised`` (default) = PnL of the trades closed/settled at this step; ``mark`` = change
of equity (cash + liquidation value at the bid net of fees): a dense signal whose sum over an
episode equals the realised PnL exactly. The transition ``(o_t, a_t, r_t, o_{t+1}, done_t)`` is
aligned (upstream defect 15), episodes never mix (16), there is no history window (17), the last
step carries the agent's own action and is done (18). Execution can be delayed ``latency_ticks``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from common.features import N_MARKET_FEATURES, agent_features, observation
from common.fees import fee_per_share
from common.policy import BUY_DOWN, BUY_UP, FLAT, SIDE_DOWN, SIDE_UP, transition
from common.schema import RAW_INDEX, StateColumns
from trainer_svc.windows import Windows, segment

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(slots=True)
class EpisodeBatch:
    """Windows laid out as a padded (E, T) grid; ``rows[e, t]`` is the state's row (-1 = padding)."""

    market: F32  # (E, T, N_MARKET_FEATURES)
    up_ask: F64  # (E, T)
    up_bid: F64
    dn_ask: F64
    dn_bid: F64
    tick_ms: I64  # (E, T)
    rows: I64  # (E, T)
    length: I64  # (E,)
    settle: F64  # (E,) 1/0, NaN unknown
    start_s: F64  # (E,)

    @property
    def n_episodes(self) -> int:
        return int(self.length.size)

    @property
    def horizon(self) -> int:
        return int(self.market.shape[1])

    @property
    def n_steps(self) -> int:
        return int(self.length.sum())


def build_batch(
    states: StateColumns, windows: Windows | None = None, select: npt.ArrayLike | None = None
) -> EpisodeBatch:
    """Episodes of ``states`` (all windows, or the window indices in ``select``)."""
    w = windows if windows is not None else segment(states)
    idx = np.arange(len(w)) if select is None else np.asarray(select, dtype=np.int64)
    lengths = w.lengths[idx]
    e, t_max = idx.size, int(lengths.max()) if idx.size else 0
    rows = np.full((e, t_max), -1, np.int64)
    tt = np.arange(t_max)
    mask = tt[None, :] < lengths[:, None]
    rows[mask] = (w.begin[idx][:, None] + tt[None, :])[mask]
    safe = np.where(mask, rows, 0)

    def px(name: str) -> F64:
        return np.where(mask, states.raw[safe, RAW_INDEX[name]], np.nan)

    market = np.where(mask[:, :, None], states.features[safe][:, :, :N_MARKET_FEATURES], 0.0).astype(np.float32)
    return EpisodeBatch(
        market=market,
        up_ask=px("up_ask_px_0"),
        up_bid=px("up_bid_px_0"),
        dn_ask=px("dn_ask_px_0"),
        dn_bid=px("dn_bid_px_0"),
        tick_ms=np.where(mask, states.tick_ms[safe], 0),
        rows=rows,
        length=lengths.astype(np.int64),
        settle=w.settle[idx].copy(),
        start_s=w.start_s[idx].copy(),
    )


class ReplayEnv:
    """Steps all episodes of a batch at once (see the module docstring for the rules)."""

    def __init__(
        self,
        batch: EpisodeBatch,
        stake: float = 1.0,
        fee_rate: float = 0.07,
        fee_exponent: float = 1.0,
        latency_ticks: int = 0,
        reward: str = "realised",
    ) -> None:
        if reward not in ("realised", "mark"):
            raise ValueError("reward must be 'realised' or 'mark'")
        self.b, self.stake, self.latency, self.reward_mode = batch, float(stake), int(latency_ticks), reward
        self.fee_rate, self.fee_exponent = fee_rate, fee_exponent
        self.ar = np.arange(batch.n_episodes)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> F32:
        e = self.b.n_episodes
        self.t = 0
        self.side = np.zeros(e, np.int8)
        self.shares = np.zeros(e)
        self.cost = np.zeros(e)
        self.liq = np.zeros(e)  # liquidation value of the open position (bid net of fee)
        self.entry_t = np.full(e, -1, np.int64)
        self.pnl = np.zeros(e)  # realised PnL so far
        self.trades = np.zeros(e, np.int64)  # positions opened
        self.wins = np.zeros(e, np.int64)  # positions closed/settled with PnL > 0
        self.closed = np.zeros(e, np.int64)
        self.deployed = np.zeros(e)  # USD spent opening positions
        self.equity_prev = np.zeros(e)
        return self.observe()

    @property
    def active(self) -> npt.NDArray[np.bool_]:
        return self.t < self.b.length

    @property
    def done_all(self) -> bool:
        return self.t >= self.b.horizon

    def _fee(self, p: F64) -> F64:
        return np.asarray(fee_per_share(p, self.fee_rate, self.fee_exponent), dtype=np.float64)

    def _held_bid(self, te: I64) -> F64:
        up, dn = self.b.up_bid[self.ar, te], self.b.dn_bid[self.ar, te]
        return np.where(self.side == SIDE_UP, up, np.where(self.side == SIDE_DOWN, dn, np.nan))

    def observe(self) -> F32:
        """Observation (E, N_OBS) at the current step (zeros for finished episodes)."""
        t = min(self.t, self.b.horizon - 1)
        has = (self.side != FLAT).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(self.cost > 0, (self.liq - self.cost) / np.maximum(self.cost, 1e-12), 0.0)
        obs = observation(self.b.market[:, t, :], agent_features(has, self.side.astype(np.float64), frac))
        if self.t >= self.b.horizon:
            obs[:] = 0.0
        return obs

    # ------------------------------------------------------------------ dynamics
    def step(self, actions: npt.ArrayLike) -> tuple[F64, npt.NDArray[np.bool_]]:
        """Apply ``actions`` (E,) at step t; returns ``(reward, done)`` for step t and advances to t+1."""
        b, t = self.b, self.t
        act = self.active
        a = np.where(act, np.asarray(actions, dtype=np.int64), 0)
        last = b.length - 1
        te = np.minimum(t + self.latency, np.maximum(last, 0))
        new_side, opened, closed = transition(self.side, a)
        realised = np.zeros(b.n_episodes)

        # close (sell the held token at its bid, less the fee)
        bid = self._held_bid(te)
        ok_c = closed & np.isfinite(bid)
        if ok_c.any():
            proceeds = self.shares[ok_c] * (bid[ok_c] - self._fee(bid[ok_c]))
            realised[ok_c] = proceeds - self.cost[ok_c]
            self._flat(ok_c, realised)

        # open (spend the stake at the ask, fee included)
        ask = np.where(a == BUY_UP, b.up_ask[self.ar, te], np.where(a == BUY_DOWN, b.dn_ask[self.ar, te], np.nan))
        ok_o = opened & np.isfinite(ask) & (ask > 0) & (ask <= 1)
        if ok_o.any():
            self.side[ok_o] = new_side[ok_o]
            self.shares[ok_o] = self.stake / ask[ok_o]
            self.cost[ok_o] = self.stake + self.shares[ok_o] * self._fee(ask[ok_o])
            self.entry_t[ok_o] = t
            self.trades[ok_o] += 1
            self.deployed[ok_o] += self.cost[ok_o]

        # mark the open position at the bid (keep the last mark when the bid is missing)
        bid_now = self._held_bid(te)
        holding = self.side != FLAT
        mark = np.where(
            holding & np.isfinite(bid_now), self.shares * (bid_now - self._fee(np.nan_to_num(bid_now))), np.nan
        )
        self.liq = np.where(np.isfinite(mark), mark, np.where(holding, self.liq, 0.0))
        unknown = ok_o & ~np.isfinite(mark)
        self.liq[unknown] = self.cost[unknown]  # no bid yet: marked at cost

        # settlement at the episode's last state
        done = act & (t == last)
        settle_now = done & holding
        if settle_now.any():
            s = b.settle[settle_now]
            s = np.where(self.side[settle_now] == SIDE_UP, s, 1.0 - s)  # a Down share pays 1 - settle_up
            fallback = self.liq[settle_now]
            value = np.where(np.isfinite(s), self.shares[settle_now] * np.nan_to_num(s), fallback)
            realised[settle_now] += value - self.cost[settle_now]
            self._flat(settle_now, realised)
            self.liq[settle_now] = 0.0

        self.pnl += realised
        equity = self.pnl + np.where(self.side != FLAT, self.liq - self.cost, 0.0)
        reward = np.where(act, equity - self.equity_prev, 0.0) if self.reward_mode == "mark" else realised
        self.equity_prev = equity
        self.t += 1
        return reward, done

    def _flat(self, mask: npt.NDArray[np.bool_], realised: F64) -> None:
        self.closed[mask] += 1
        self.wins[mask] += (realised[mask] > 0).astype(np.int64)
        self.side[mask] = FLAT
        self.shares[mask] = 0.0
        self.cost[mask] = 0.0
        self.entry_t[mask] = -1

    def equity(self) -> F64:
        """Realised PnL plus the open position's mark, per episode."""
        return self.pnl + np.where(self.side != FLAT, self.liq - self.cost, 0.0)
