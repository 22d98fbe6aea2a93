"""Private runs as a researcher starts them: the guarantee recorded, bad settings refused in
one line before any work, resumable, and a strategy that cannot carry the noise refused."""

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config
from helpers import whole_and_resumed

from fedsim.build import build_simulation
from fedsim.errors import ConfigError
from fedsim.metrics.recorder import Recorder
from fedsim.runner import precheck, run_job

PRIVATE = [
    "strategy=dpsgd",
    "strategy.local_epochs=null",
    "strategy.local_steps=1",
    "topology=erdos_renyi",
    "topology.p=0.5",
    "topology.connected=true",
    "model=logreg",
    "num_nodes=8",
    "optimizer.batch_size=8",
    "optimizer.lr=0.5",
    "eval_every=2",
]
ANY_GRAPH = [o for o in PRIVATE if not o.startswith("topology")]


@pytest.mark.parametrize("mechanism", ["local", "decor", "zero_sum", "corn", "central"])
def test_a_private_run_records_the_guarantee_it_achieved(tmp_path, mechanism):
    config = compose_config(*PRIVATE, "rounds=4", f"privacy={mechanism}", "privacy.epsilon=20")
    summary = run_job(config, tmp_path)
    privacy = summary["privacy"]
    assert privacy["mechanism"] == mechanism and privacy["noisy_steps_run"] == 4
    assert privacy["epsilon_spent"] == pytest.approx(20, rel=1e-6)
    assert privacy["epsilon_spent_dp_accounting"] < 20
    assert privacy["noise_normalised"] >= 1 - 1e-6  # never below the central-DP level
    if mechanism != "central":
        assert privacy["max_inverse_diagonal"] <= privacy["bound_b"] * (1 + 1e-6)
    rows = pd.read_parquet(tmp_path / "metrics.parquet")
    spent = rows[rows.metric == "privacy_epsilon_spent"].set_index("round").value
    assert spent.to_dict() == pytest.approx({0: 0.0, 2: spent[2], 4: 20.0})
    assert 0 < spent[2] < 20


def test_only_local_noise_protects_against_one_curious_node(tmp_path):
    spent = {}
    for mechanism in ("local", "decor", "corn"):
        config = compose_config(*PRIVATE, "rounds=2", f"privacy={mechanism}")
        privacy = run_job(config, tmp_path / mechanism)["privacy"]
        spent[mechanism] = privacy["epsilon_against_one_curious_node"]
    assert spent["local"] == pytest.approx(10)
    assert spent["decor"] > 10  # a neighbour subtracts the pairwise noise it shares
    assert spent["corn"] > spent["decor"]  # everyone knows the one shared seed


def test_a_private_run_resumes_to_the_same_metrics(tmp_path):
    config = compose_config(*PRIVATE, "rounds=4", "privacy=decor", "checkpoint_every=2")
    whole, again = whole_and_resumed(config, tmp_path, killed_after=2)
    pd.testing.assert_frame_equal(whole, again)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["privacy=local", "privacy.epsilon=0"], "privacy.epsilon=0.0 must be > 0"),
        (["privacy=local", "privacy.delta=1.5"], r"privacy.delta=1.5 must lie in \(0, 1\)"),
        (["privacy=decor", "privacy.clip=0"], "privacy.clip=0.0 must be > 0"),
        (["privacy=local", "privacy.sampler=fast"], "privacy.sampler=fast is not one of"),
        (["privacy=corn", "privacy.max_variance_ratio=0.5"], "must be >= 1"),
        (["privacy=corn", "privacy.solver=MOSEK"], "privacy.solver=MOSEK"),
        (["privacy=corn", "num_nodes=300"], "privacy=corn solves an n x n semidefinite"),
        (["privacy=decor", "topology=one_peer_exponential"], "privacy=decor needs a symmetric W"),
        (
            ["privacy=local", "strategy=fedavg", "strategy.sample_size=8"],
            "privacy=local adds noise before every node gossips with W; FedAvg's rounds",
        ),
    ],
)
def test_bad_privacy_settings_fail_in_one_line_before_training(overrides, message):
    graph = (
        [o for o in PRIVATE if not o.startswith("topology")]
        if "topology=" in str(overrides)
        else PRIVATE
    )
    with pytest.raises(ConfigError, match=message) as error:
        precheck([*graph, "rounds=2", *overrides])
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_the_papers_cnn_trains_privately_on_mnist_sized_images(tmp_path):
    config = compose_config(
        "strategy=dpsgd", "strategy.local_epochs=null", "strategy.local_steps=1",
        "topology=ring", "num_nodes=4", "rounds=1", "model=cnn_corn", "data.image_size=28",
        "optimizer.batch_size=4", "privacy=corn",
    )  # fmt: skip
    summary = run_job(config, tmp_path)
    assert summary["status"] == "completed" and summary["num_parameters"] == 421_642
    assert summary["privacy"]["noisy_steps_run"] == 1


def test_a_graph_drawn_every_round_gets_its_own_covariance(tmp_path):
    config = compose_config(
        *ANY_GRAPH, "topology=random_regular_per_round", "rounds=3", "privacy=corn"
    )
    simulation = build_simulation(config)
    recorder = Recorder(tmp_path / "metrics.parquet")
    simulation.run(recorder, progress=False)
    recorder.close()
    solved = [entry.weights.toarray() for entry in simulation.privacy._solved.values()]
    assert len(solved) == 3 and not np.allclose(solved[1], solved[2])


def test_user_level_privacy_bounds_a_nodes_whole_batch(tmp_path):
    """Replacing one example moves a step's sum of gradients clipped to C = 0.1 by at most
    2C; replacing a node's whole data (a user) moves its batch of B = 8 by at most 2BC, so
    the bound on (R^-1)_ii is B^2 = 64 times smaller and the local noise 64 times larger
    in variance, for the same epsilon."""
    example, user = (
        build_simulation(
            compose_config(*PRIVATE, "rounds=4", "privacy=local", f"privacy.unit={unit}")
        )
        for unit in ("example", "user")
    )
    assert example.privacy.contribution == 0.1 and user.privacy.contribution == pytest.approx(0.8)
    assert user.privacy.bound == pytest.approx(example.privacy.bound / 64)
    noise = [run.privacy.last.covariance.independent for run in (example, user)]
    assert noise[1] == pytest.approx(64 * noise[0])
    summary = run_job(
        compose_config(*PRIVATE, "rounds=4", "privacy=local", "privacy.unit=user"), tmp_path
    )
    assert summary["privacy"]["unit"] == "user"
    assert summary["privacy"]["epsilon_spent"] == pytest.approx(10, rel=1e-6)
    with pytest.raises(ConfigError, match="privacy.unit=node is not one of: example, user"):
        build_simulation(compose_config(*PRIVATE, "privacy=local", "privacy.unit=node"))
