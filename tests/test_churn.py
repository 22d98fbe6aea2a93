import re

import numpy as np
import pytest

from fedsim.errors import ConfigError
from fedsim.simulated.churn import CRASH, JOIN, KINDS, LEAVE, Churn, Event, none, schedule, trace


def write_trace(tmp_path, text):
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return str(path)


def test_none_keeps_everyone_up():
    churn = none(3, 0)
    assert churn.static and churn.num_nodes == 3
    assert churn.alive(1e9).tolist() == [True] * 3 and churn.events_between(0, 1e9) == []


def test_the_papers_crash_run():
    # MoDeST: 100 nodes, 5 crash every 60 s from 300 s until 80 % are down.
    churn = schedule(100, 0, crash_count=5, crash_every_s=60, crash_start_s=300)
    assert churn.alive(299.9).sum() == 100
    assert churn.alive(300).sum() == 95 and not churn.alive(300)[95:].any()
    assert churn.alive(1199).sum() == 25
    assert churn.alive(1200).sum() == 20 and churn.alive(1e6).sum() == 20
    assert np.flatnonzero(churn.alive(1200)).tolist() == list(range(20))
    assert set(churn.kinds.tolist()) == {CRASH} and len(churn.times) == 80


def test_the_papers_join_run():
    # MoDeST: 90 nodes at the start, 10 more join one per 60 s.
    churn = schedule(100, 0, join_count=10, join_every_s=60, join_start_s=20)
    assert churn.initial.sum() == 90 and not churn.initial[90:].any()
    assert churn.alive(19).sum() == 90 and churn.alive(20).sum() == 91
    assert churn.is_alive(90, 20) and not churn.is_alive(91, 20)
    assert churn.alive(20 + 9 * 60).all()
    assert [event.node for event in churn.events_between(0, 100)] == [90, 91]


def test_random_crashes_are_seeded_and_spare_joiners():
    def crashed(seed):
        churn = schedule(20, seed, crash_count=3, crash_order="random", join_count=5)
        return set(np.flatnonzero(churn.initial & ~churn.alive(1e6)).tolist())

    assert crashed(1) == crashed(1) and len(crashed(1)) == 12  # floor(0.8 x 15)
    assert crashed(1) != crashed(2) and max(crashed(1) | crashed(2)) < 15


def test_leavers_come_after_the_crashers_in_the_ranking():
    churn = schedule(10, 0, crash_count=2, crash_until_fraction=0.5, leave_count=2,
                     leave_every_s=10, leave_start_s=100)  # fmt: skip
    assert churn.events_between(0, 115) == [Event(100.0, 4, LEAVE), Event(110.0, 3, LEAVE)]
    assert np.flatnonzero(churn.alive(1e6)).tolist() == [0, 1, 2]


def test_events_between_excludes_the_start_and_includes_the_end():
    churn = schedule(4, 0, join_count=3, join_every_s=10, join_start_s=10)
    assert [e.time for e in churn.events_between(10, 30)] == [20.0, 30.0]
    assert [e.time for e in churn.events_between(0, 10)] == [10.0]
    assert churn.events_between(30, 40) == [] and KINDS[JOIN] == "join"


def test_trace_reads_intervals_with_rejoins(tmp_path):
    path = write_trace(
        tmp_path,
        "node,start_s,end_s\n0,0,\n1,0,10\n1,20,inf\n2,5,15\n\n3,0,10\n3,10,30\n",
    )
    churn = trace(5, 0, path)
    assert churn.initial.tolist() == [True, True, False, True, False]
    assert churn.events_between(0, 100) == [
        Event(5.0, 2, JOIN), Event(10.0, 1, CRASH), Event(15.0, 2, CRASH),
        Event(20.0, 1, JOIN), Event(30.0, 3, CRASH),
    ]  # fmt: skip
    assert churn.alive(12).tolist() == [True, False, True, True, False]
    assert churn.alive(20).tolist() == [True, True, False, True, False]
    assert not churn.is_alive(1, 10) and churn.is_alive(1, 25) and not churn.is_alive(4, 0)


def test_churn_is_frozen_and_events_must_be_sorted():
    churn = none(2, 0)
    with pytest.raises(ValueError, match="read-only"):
        churn.initial[0] = False
    with pytest.raises(ConfigError, match="Churn.times must be sorted"):
        Churn(np.ones(2, bool), np.array([2.0, 1.0]), np.array([0, 1]), np.array([0, 0]))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"crash_count": -1}, "churn.crash_count=-1 must be an integer >= 0"),
        ({"leave_count": 1.5}, "churn.leave_count=1.5 must be an integer >= 0"),
        ({"join_count": 10}, "churn.join_count=10 must be < num_nodes=10"),
        ({"crash_every_s": 0}, "churn.crash_every_s=0 must be a finite number > 0"),
        ({"join_start_s": -5.0}, "churn.join_start_s=-5.0 must be a finite number > 0"),
        ({"leave_every_s": float("inf")}, "churn.leave_every_s=inf must be a finite number > 0"),
        ({"crash_until_fraction": 1.0}, r"churn.crash_until_fraction=1.0 must be in \[0, 1\)"),
        ({"crash_order": "first"}, "churn.crash_order=first is not one of: last, random"),
        ({"crash_count": 1, "leave_count": 3}, "churn.leave_count=3 exceeds the 2 present nodes"),
    ],
)
def test_bad_schedules_name_the_setting(settings, message):
    with pytest.raises(ConfigError, match=message):
        schedule(10, 0, **settings)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"must start with the header node,start_s,end_s, not \[\]"),
        ("id,start,end\n0,0,1\n", "must start with the header node,start_s,end_s"),
        ("node,start_s,end_s\n0,0\n", "line 2: expected 3 cells node,start_s,end_s, got 2"),
        ("node,start_s,end_s\nfirst,0,1\n", "line 2: node='first' is not a number"),
        ("node,start_s,end_s\n0,soon,1\n", "line 2: start_s='soon' is not a number"),
        ("node,start_s,end_s\n4,0,1\n", r"line 2: node 4 is not an id in 0..3"),
        ("node,start_s,end_s\n1.5,0,1\n", r"line 2: node 1.5 is not an id in 0..3"),
        ("node,start_s,end_s\n0,-1,1\n", "line 2: start_s=-1.0 must be a finite number >= 0"),
        ("node,start_s,end_s\n0,5,5\n", "line 2: end_s=5.0 must be > start_s=5.0"),
        ("node,start_s,end_s\n0,0,10\n0,5,20\n", r"node 0 has overlapping intervals \[0.0, 10.0\)"),
    ],
)
def test_bad_traces_name_the_file_and_the_line(tmp_path, text, message):
    path = write_trace(tmp_path, text)
    with pytest.raises(ConfigError, match=f"churn.path={re.escape(path)}.*{message}"):
        trace(4, 0, path)


def test_a_missing_trace_names_the_path():
    with pytest.raises(ConfigError, match="churn.path=/no/such.csv does not exist"):
        trace(4, 0, "/no/such.csv")


def test_a_sampled_nodes_state_is_looked_up_in_its_own_events(tmp_path):
    """``up`` (per node asked) says what ``alive`` (every node) says, at event times too."""
    rows = ["node,start_s,end_s", "0,0,", "1,0,10", "1,20,inf", "2,5,15", "3,0,10", "3,10,30"]
    churns = [
        trace(6, 0, write_trace(tmp_path, "\n".join(rows) + "\n")),
        schedule(40, 3, crash_count=2, crash_every_s=5, crash_start_s=5, crash_order="random",
                 leave_count=2, leave_every_s=5, join_count=6, join_every_s=5, join_start_s=10),
    ]  # fmt: skip
    for churn in churns:
        nodes = np.random.default_rng(0).integers(0, churn.num_nodes, 30)
        for time in (0.0, 4.9, 5.0, 10.0, 12.0, 20.0, 31.0, 100.0, 300.0):
            assert churn.up(nodes, time).tolist() == churn.alive(time)[nodes].tolist()
