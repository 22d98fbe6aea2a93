"""A Little Is Enough: every Byzantine node sends mu_H - z sigma_H of the step's honest
messages, with z given or z_max by the paper's or the EPFL code's formula (spec
byzantine.md §1; "What fedsim must be able to show", item 2)."""

import math

import numpy as np
import pytest
import torch

from fedsim.attacks.alie import ALIE, z_max
from fedsim.errors import ConfigError
from fedsim.messages import MessageTransforms, Outgoing


def lying(*nodes: int, num_nodes: int = 6, **settings) -> ALIE:
    attack = ALIE(nodes=list(nodes), **settings)
    attack.prepare(num_nodes=num_nodes, seed=0)
    return attack


def outgoing(senders, link: str = "d2d", num_nodes: int = 6) -> Outgoing:
    return Outgoing(np.asarray(senders), link, round_idx=0, seed=0, num_nodes=num_nodes)


@pytest.mark.parametrize(
    "n, f, paper, code", [(25, 5, 0.47, 0.25), (50, 12, 0.58, 0.34), (20, 4, 0.39, 0.16)]
)
def test_z_max_reproduces_the_specs_worked_values(n, f, paper, code):
    assert round(z_max(n, f, "paper"), 2) == paper
    assert round(z_max(n, f, "code"), 2) == code


def test_z_max_is_nan_where_the_formula_leaves_zero_one():
    assert math.isnan(z_max(5, 3, "paper"))  # s = 0: (5 - 0) / 5 = 1
    assert math.isnan(z_max(2, 1, "code"))  # one honest node: (1 - 1) / 1 = 0
    assert z_max(2, 1, "paper") == 0.0  # s = 1: (2 - 1) / 2


VALUES = torch.tensor([[0.0, 1.0], [100.0, 100.0], [2.0, 1.0], [4.0, 1.0], [-7.0, 3.0]])


def test_every_byzantine_node_sends_the_honest_mean_less_z_unbiased_deviations():
    """Honest (0, 1), (2, 1), (4, 1): mean (2, 1), unbiased deviation (2, 0); z = 0.5."""
    received = lying(1, 4, z=0.5)(VALUES, outgoing(range(5)))
    assert received.tolist() == [[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [4.0, 1.0], [1.0, 1.0]]
    assert VALUES[1].tolist() == [100.0, 100.0]  # the sent rows are not written in place


def test_an_upload_arrives_as_the_servers_model_plus_the_forged_update():
    server = torch.tensor([[1.0, 1.0]]).expand(5, 2)
    attack = MessageTransforms.of([lying(1, 4, z=0.5)])
    received = attack.apply(VALUES + 1, outgoing(range(5), link="uplink"), server)
    assert received[[1, 4]].tolist() == [[2.0, 2.0], [2.0, 2.0]]


@pytest.mark.parametrize("z_form, z", [("code", 0.2533), ("paper", 0.4677)])
def test_the_computed_shift_stays_within_the_honest_spread(z_form, z):
    """n = 25 messages, f = 5 Byzantine: z_max of the form, and mu_H - z sigma_H is within
    mu_H +- z sigma_H coordinate-wise."""
    values = torch.randn(25, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    attack = lying(*range(0, 25, 5), num_nodes=25, z_form=z_form)
    received = attack(values, outgoing(range(25), num_nodes=25))
    byzantine = torch.zeros(25, dtype=torch.bool)
    byzantine[::5] = True
    honest = values[~byzantine]
    mean, spread = honest.mean(dim=0), honest.std(dim=0, correction=1)
    shift = attack.shift(25, 5)
    assert shift == pytest.approx(z, abs=1e-4)
    torch.testing.assert_close(received[byzantine], (mean - shift * spread).expand(5, -1))
    assert ((received - mean).abs() <= shift * spread + 1e-12)[byzantine].all()
    assert received[~byzantine].equal(honest)


def test_a_single_honest_message_has_no_spread_and_no_finite_z_leaves_messages_as_sent():
    pair = VALUES[[0, 1]]
    assert lying(1, z_form="paper")(pair, outgoing([0, 1]))[1].tolist() == [0.0, 1.0]  # z = 0
    assert lying(1, z=3.0)(pair, outgoing([0, 1]))[1].tolist() == [0.0, 1.0]  # sigma = 0
    assert lying(1, z_form="code")(pair, outgoing([0, 1])).equal(pair)  # z = nan
    assert lying(1, 4, z=1.0)(VALUES[[1, 4]], outgoing([1, 4])).equal(VALUES[[1, 4]])  # none honest


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"z_form": "median"}, "attack.z_form=median is not one of: paper, code"),
        ({"z": math.inf}, "attack.z=inf must be a finite number or null"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(ConfigError, match=message):
        ALIE(**settings)
