"""Churn: which nodes are up at each simulated time.

A :class:`Churn` is the set of nodes present at t = 0 plus a time-sorted list of events:
a node crashes (vanishes without notice), leaves (vanishes gracefully, after saying so) or
joins.  Every event happens at a time > 0, so ``alive(0.0)`` is ``initial``.  The factories
build the ``churn`` config group: :func:`none`, :func:`schedule` (the crash and join runs of
de Vos et al., "MoDeST: Bridging the Gap between Federated and Decentralized Learning with
Decentralized Sampling", 2023) and :func:`trace` (availability intervals from a CSV file).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fedsim import rng
from fedsim.errors import check
from fedsim.files import reading
from fedsim.simulated.frozen import freeze_fields

CRASH, LEAVE, JOIN = 0, 1, 2
KINDS = ("crash", "leave", "join")
CRASH_ORDERS = ("last", "random")
TRACE_HEADER = ["node", "start_s", "end_s"]


class Event(NamedTuple):
    """One change: ``node`` crashes, leaves or joins (``kind``) at ``time`` seconds."""

    time: float
    node: int
    kind: int


@dataclass(frozen=True, eq=False)
class Churn:
    """Nodes crash, leave and join at simulated times.

    Attributes
    ----------
    initial : (n,) bool, the nodes present at t = 0.
    times : (m,) sorted event times in seconds, all > 0.
    nodes : (m,) the node of each event.
    kinds : (m,) ``CRASH``, ``LEAVE`` or ``JOIN``.
    """

    initial: np.ndarray
    times: np.ndarray
    nodes: np.ndarray
    kinds: np.ndarray

    def __post_init__(self) -> None:
        freeze_fields(
            self, {"initial": np.bool_, "times": np.float64, "nodes": np.int64, "kinds": np.int8}
        )
        count = len(self.times)
        check(
            self.initial.ndim == 1 and self.nodes.shape == self.kinds.shape == (count,),
            "Churn.initial must be 1-D and Churn.times, nodes and kinds of one length",
        )
        check(
            bool(np.all(np.isfinite(self.times) & (self.times > 0))),
            "Churn.times must be finite and > 0 (t = 0 is Churn.initial)",
        )
        check(bool(np.all(np.diff(self.times) >= 0)), "Churn.times must be sorted")
        check(
            bool(np.all((self.nodes >= 0) & (self.nodes < self.num_nodes))),
            f"Churn.nodes must lie in 0..{self.num_nodes - 1}",
        )
        check(
            bool(np.all((self.kinds >= 0) & (self.kinds < len(KINDS)))),
            "Churn.kinds must be CRASH (0), LEAVE (1) or JOIN (2)",
        )

    @property
    def num_nodes(self) -> int:
        """The number of nodes ``n``, present or not."""
        return len(self.initial)

    @property
    def static(self) -> bool:
        """True when nobody ever crashes, leaves or joins."""
        return len(self.times) == 0

    def alive(self, time: float) -> np.ndarray:
        """(n,) bool: who is up at ``time``; events at exactly ``time`` have happened."""
        happened = int(np.searchsorted(self.times, time, side="right"))
        state = self.initial.copy()
        # The last event of each node decides; reversing makes np.unique find it first.
        nodes, last = np.unique(self.nodes[:happened][::-1], return_index=True)
        state[nodes] = self.kinds[:happened][::-1][last] == JOIN
        return state

    def up(self, nodes: np.ndarray, time: float) -> np.ndarray:
        """Whether each of ``nodes`` is up at ``time`` (as :meth:`alive` says), looked up in
        each one's own events: time in the nodes asked and their events, not the population
        (a trace's intervals per sampled client)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        grouped = self.nodes[self._by_node]
        first = np.searchsorted(grouped, nodes, side="left")
        last = np.searchsorted(grouped, nodes, side="right")
        state = self.initial[nodes].copy()
        for position in np.flatnonzero(last > first):
            events = self._by_node[first[position] : last[position]]
            happened = int(np.searchsorted(self.times[events], time, side="right"))
            if happened:
                state[position] = self.kinds[events[happened - 1]] == JOIN
        return state

    @cached_property
    def _by_node(self) -> np.ndarray:
        """The events ordered by node, each node's in time order."""
        return np.argsort(self.nodes, kind="stable")

    def is_alive(self, node: int, time: float) -> bool:
        """Whether ``node`` is up at ``time``."""
        mine = np.flatnonzero((self.nodes == node) & (self.times <= time))
        return bool(self.initial[node]) if len(mine) == 0 else bool(self.kinds[mine[-1]] == JOIN)

    def events_between(self, start: float, end: float) -> list[Event]:
        """The events with ``start < time <= end``, in time order."""
        first = int(np.searchsorted(self.times, start, side="right"))
        stop = int(np.searchsorted(self.times, end, side="right"))
        return [
            Event(float(self.times[i]), int(self.nodes[i]), int(self.kinds[i]))
            for i in range(first, stop)
        ]


def _churn(initial: np.ndarray, events: list[tuple[np.ndarray, np.ndarray, int]]) -> Churn:
    """Merge ``(times, nodes, kind)`` groups into a :class:`Churn`; ties keep group order."""
    times = np.concatenate([np.zeros(0)] + [group_times for group_times, _, _ in events])
    nodes = np.concatenate([np.zeros(0, np.int64)] + [group_nodes for _, group_nodes, _ in events])
    kinds = np.concatenate(
        [np.zeros(0, np.int8)] + [np.full(len(group), kind, np.int8) for _, group, kind in events]
    )
    order = np.argsort(times, kind="stable")
    return Churn(initial=initial, times=times[order], nodes=nodes[order], kinds=kinds[order])


def none(num_nodes: int, seed: int) -> Churn:
    """Every node is up all the time."""
    return _churn(np.ones(num_nodes, dtype=bool), [])


def schedule(
    num_nodes: int,
    seed: int,
    crash_count: int = 0,
    crash_every_s: float = 60.0,
    crash_start_s: float = 300.0,
    crash_until_fraction: float = 0.8,
    crash_order: str = "last",
    leave_count: int = 0,
    leave_every_s: float = 60.0,
    leave_start_s: float = 300.0,
    join_count: int = 0,
    join_every_s: float = 60.0,
    join_start_s: float = 20.0,
) -> Churn:
    """Crashes, leaves and joins at regular times, as in the MoDeST paper's runs.

    The last ``join_count`` node ids are absent at t = 0 and join one every
    ``join_every_s`` from ``join_start_s``, in id order.  The others are present; they
    are ranked by ``crash_order`` (``"last"``: highest id first; ``"random"``: a
    permutation seeded by ``seed``).  The first ``floor(crash_until_fraction x present)``
    of that ranking crash, ``crash_count`` every ``crash_every_s`` from ``crash_start_s``
    (none when ``crash_count`` is 0); the next ``leave_count`` leave, one every
    ``leave_every_s`` from ``leave_start_s``.  Joiners never crash or leave.
    """
    _require(
        lambda count: count >= 0 and int(count) == count,
        "an integer >= 0",
        crash_count=crash_count,
        leave_count=leave_count,
        join_count=join_count,
    )
    _require(
        lambda seconds: 0 < seconds < math.inf,
        "a finite number > 0",
        crash_every_s=crash_every_s,
        crash_start_s=crash_start_s,
        leave_every_s=leave_every_s,
        leave_start_s=leave_start_s,
        join_every_s=join_every_s,
        join_start_s=join_start_s,
    )
    _require(
        lambda fraction: 0 <= fraction < 1, "in [0, 1)", crash_until_fraction=crash_until_fraction
    )
    check(
        crash_order in CRASH_ORDERS, f"churn.crash_order={crash_order} is not one of: last, random"
    )
    check(
        join_count < num_nodes,
        f"churn.join_count={join_count} must be < num_nodes={num_nodes} (someone must start)",
    )
    present = num_nodes - join_count
    # The epsilon keeps 0.8 x 100 at 80 despite binary rounding.
    crashes = math.floor(crash_until_fraction * present + 1e-9) if crash_count > 0 else 0
    check(
        leave_count <= present - crashes,
        f"churn.leave_count={leave_count} exceeds the {present - crashes} present nodes "
        "that do not crash",
    )
    if crash_order == "last":
        ranking = np.arange(present)[::-1]
    else:
        ranking = rng.generator(seed, rng.CHURN).permutation(present)
    crash_times = crash_start_s + (np.arange(crashes) // max(crash_count, 1)) * crash_every_s
    leave_times = leave_start_s + np.arange(leave_count) * leave_every_s
    join_times = join_start_s + np.arange(join_count) * join_every_s
    return _churn(
        np.arange(num_nodes) < present,
        [
            (crash_times, ranking[:crashes], CRASH),
            (leave_times, ranking[crashes : crashes + leave_count], LEAVE),
            (join_times, np.arange(present, num_nodes), JOIN),
        ],
    )


def _require(holds: Callable[[float], bool], legal: str, **settings: float) -> None:
    """Raise a :class:`ConfigError` for the first of ``settings`` that ``holds`` rejects."""
    for name, value in settings.items():
        check(holds(value), f"churn.{name}={value} must be {legal}")


def trace(num_nodes: int, seed: int, path: str) -> Churn:
    """Availability intervals from a CSV file with header ``node,start_s,end_s``.

    Each row says ``node`` is up on ``[start_s, end_s)``; an empty or ``inf`` end means
    until the end of the run.  A node with no row is never up; one up at 0 is present at
    t = 0.  Every other start is a join and every finite end a crash (availability traces
    do not say whether a departure was graceful).  Intervals of one node may touch (they
    merge) but not overlap.
    """
    intervals = _read_trace(num_nodes, path)
    initial = np.zeros(num_nodes, dtype=bool)
    joins: list[tuple[float, int]] = []
    crashes: list[tuple[float, int]] = []
    for node, spans in intervals.items():
        spans.sort()
        merged = [spans[0]]
        for start, end in spans[1:]:
            last_start, last_end = merged[-1]
            check(
                start >= last_end,
                f"churn.path={path}: node {node} has overlapping intervals "
                f"[{last_start}, {last_end}) and [{start}, {end})",
            )
            merged[-1:] = [(last_start, end)] if start == last_end else [merged[-1], (start, end)]
        for start, end in merged:
            initial[node] |= start == 0
            joins += [(start, node)] if start > 0 else []
            crashes += [(end, node)] if end < math.inf else []
    return _churn(initial, [_group(crashes, CRASH), _group(joins, JOIN)])


def _group(events: list[tuple[float, int]], kind: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(time, node)`` pairs as the ``(times, nodes, kind)`` group that :func:`_churn` takes."""
    times = np.array([time for time, _ in events], dtype=np.float64)
    return times, np.array([node for _, node in events], dtype=np.int64), kind


def _read_trace(num_nodes: int, path: str) -> dict[int, list[tuple[float, float]]]:
    """The ``[start, end)`` intervals of each node that a trace file lists."""
    check(path is not None, "churn=trace needs churn.path=PATH (a CSV file node,start_s,end_s)")
    source = Path(path)
    check(source.is_file(), f"churn.path={path} does not exist")
    with (
        reading(f"churn.path={path}", "a CSV file node,start_s,end_s"),
        source.open(newline="", encoding="utf-8") as handle,
    ):
        rows = list(csv.reader(handle))
    header = [cell.strip() for cell in rows[0]] if rows else []
    check(
        header == TRACE_HEADER,
        f"churn.path={path} must start with the header {','.join(TRACE_HEADER)}, not {header}",
    )
    intervals: dict[int, list[tuple[float, float]]] = {}
    for line_number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"churn.path={path} line {line_number}"
        check(len(row) == 3, f"{where}: expected 3 cells node,start_s,end_s, got {len(row)}")
        node = _number(row[0], where, "node")
        start = _number(row[1], where, "start_s")
        end = _number(row[2], where, "end_s") if row[2].strip() else math.inf
        check(
            0 <= node < num_nodes and node == int(node),
            f"{where}: node {row[0].strip()} is not an id in 0..{num_nodes - 1}",
        )
        check(0 <= start < math.inf, f"{where}: start_s={start} must be a finite number >= 0")
        check(end > start, f"{where}: end_s={end} must be > start_s={start}")
        intervals.setdefault(int(node), []).append((start, end))
    return intervals


def _number(text: str, where: str, column: str) -> float:
    """``text`` as a float (NaN refused), or a :class:`ConfigError` naming the file, line and
    column."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    check(not math.isnan(value), f"{where}: {column}={text.strip()!r} is not a number")
    return value
