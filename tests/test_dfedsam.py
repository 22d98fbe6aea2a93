"""DFedSAM / DFedSAM-MGS: the SAM step by hand, D-PSGD at rho = 0, W^Q Y at Q times the bytes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TRAIN_X, TRAIN_Y, path_federation, run_rounds, started_backend, zero_logreg_task

from fedsim.errors import ConfigError
from fedsim.plans import Train
from fedsim.strategies import DPSGD
from fedsim.strategies.dfedsam import DFedSAM, SharpnessAware


def loss_gradient(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Autograd's gradient of the mean cross-entropy of logistic regression at the flat w."""
    leaf = w.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(
        F.cross_entropy(x @ leaf[:4].view(2, 2).T + leaf[4:], y), leaf
    )
    return gradient


@pytest.mark.parametrize("vectorise", [True, False])
def test_a_sam_step_takes_the_gradient_at_the_ascent_point(vectorise):
    """Node 2, two full-batch steps: y <- y - lr grad F(y + rho g / ||g||), g = grad F(y)."""
    rho, lr = 0.3, 0.5
    backend = started_backend(zero_logreg_task(lr=lr), num_rows=3, vectorise=vectorise)
    w = backend.params[2].clone()
    backend.train(Train(np.array([2]), steps=2, transforms=(SharpnessAware(rho),)), 0)
    x, y = TRAIN_X[2:], TRAIN_Y[2:]
    for _ in range(2):
        g = loss_gradient(w, x, y)
        w = w - lr * loss_gradient(w + rho * g / g.norm(), x, y)
    torch.testing.assert_close(backend.params[2], w)


def test_rho_zero_is_dpsgd_bit_for_bit():
    dfedsam = DFedSAM(rho=0.0, local_epochs=None, local_steps=2)
    dpsgd = DPSGD(local_epochs=None, local_steps=2)
    assert torch.equal(run_rounds(dfedsam).params, run_rounds(dpsgd).params)


def test_sam_moves_the_nodes_differently_from_sgd():
    dfedsam = DFedSAM(rho=0.5, local_epochs=None, local_steps=2)
    dpsgd = DPSGD(local_epochs=None, local_steps=2)
    assert not torch.allclose(run_rounds(dfedsam).params, run_rounds(dpsgd).params)


def test_q_gossip_steps_apply_w_to_the_q_and_send_q_times_the_messages():
    task = zero_logreg_task()
    federation = path_federation(task)
    plan = DFedSAM(rho=0.1, gossip_steps=3, local_epochs=None, local_steps=1).plan(0, federation)
    train, *gossips = plan.steps
    assert len(gossips) == 3
    one = DFedSAM(rho=0.1, local_epochs=None, local_steps=1).plan(0, federation)
    sent = [sum(step.messages(3).sent(3) for step in p.steps) for p in (plan, one)]
    assert sent[0].tolist() == (3 * sent[1]).tolist()

    backend = started_backend(task, num_rows=3)
    backend.execute(type(plan)(steps=(train,)), round_idx=0)
    trained = backend.params.clone().double()
    backend.execute(type(plan)(steps=tuple(gossips)), round_idx=0)
    weights = torch.tensor(gossips[0].weights.toarray())
    torch.testing.assert_close(
        backend.params.double(), torch.linalg.matrix_power(weights, 3) @ trained
    )

    def consensus(rows):
        return float((rows - rows.mean(dim=0)).square().sum())

    distances = [consensus(torch.linalg.matrix_power(weights, q) @ trained) for q in range(4)]
    assert distances == sorted(distances, reverse=True)  # never grows with Q (symmetric W)


def test_bad_settings_are_one_line_each():
    with pytest.raises(ConfigError, match="strategy.rho=-1 must be >= 0"):
        DFedSAM(rho=-1)
    with pytest.raises(ConfigError, match="strategy.gossip_steps=0 must be >= 1"):
        DFedSAM(gossip_steps=0)


def test_sam_is_refused_beside_private_steps():
    """In one line when the run is built (privacy.prepare), and by the backend too."""
    from fedsim.privacy import Privacy

    task = zero_logreg_task()
    federation = path_federation(task)
    first_plan = DFedSAM(local_epochs=None, local_steps=1).plan(0, federation)
    with pytest.raises(ConfigError, match="privacy=local clips and noises per-example"):
        Privacy("local", epsilon=5.0).prepare(first_plan, federation, rounds=3, name="DFedSAM")

    from fedsim.privacy.covariance import NoiseCovariance
    from fedsim.privacy.noise import NoisyStep

    covariance = NoiseCovariance(3, 1.0, np.zeros((0, 2), dtype=np.int64), 0.0, None)
    noisy = NoisyStep(0.1, covariance, seed=0, batch_size=4)
    backend = started_backend(zero_logreg_task(), num_rows=3)
    with pytest.raises(ConfigError, match="cannot be chained with one that takes gradients"):
        backend.train(Train(np.arange(3), steps=1, transforms=(noisy, SharpnessAware(0.1))), 0)
