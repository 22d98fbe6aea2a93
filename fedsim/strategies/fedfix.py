"""FedFix and asynchronous FedAvg with stochastic aggregation weights (Fraboni et al.)."""

from __future__ import annotations

import heapq

import numpy as np

from fedsim import rng
from fedsim.errors import check
from fedsim.plans import Average, RoundPlan, Step
from fedsim.server_optimizers import ServerMomentum
from fedsim.simulated.clock import Clock
from fedsim.strategies.asynchronous import BASE, AsynchronousServer, Events
from fedsim.strategies.base import Federation

WEIGHTS = ("weight", "identical")
IMPORTANCES = ("uniform", "num_examples")
TOLERANCE = 1e-9
"""Relative: a task that ends within this of an aggregation instant is in time for it, and
``ceil(tau / dt)`` ignores as much, so that the weights count the steps the schedule takes."""


class FedFix(AsynchronousServer):
    """FedAvg with stochastic aggregation weights (Fraboni, Vidal, Kameni and Lorenzi, "A
    General Theory for Federated Optimization with Asynchronous and Heterogeneous Clients
    Updates", JMLR 24(110), 2023; the official code's ``asynchronous_FL`` branch).

    Every client trains at all times (n_SGD local steps from the model it last received);
    the server steps ``x <- x + server_lr sum_i d_i (y_i - x_rho_i)`` over the clients that
    returned, ``x_rho_i`` the version client i started from, and sends the new model to
    those clients only.  ``period`` says when it steps:

    - ``period`` (FedFix-dt): at dt, 2 dt, ..., ``dt = period * max_i tau_i`` (tau_i the
      client's task time on the simulated clock: download, local work, upload; the code's
      slowest client takes 1 time unit, so FedFix-0.5 is ``period=0.5``), over every client
      that returned by then, even none (the version still advances).  A client that
      finished waits for that instant to get the new model, so it returns once every
      ``ceil(tau_i / dt)`` steps; ``weights=weight`` sets ``d_i = ceil(tau_i / dt) p_i``,
      whence ``E[omega_i] = p_i``: the federated objective ``sum_i p_i f_i``.
    - ``period=null`` (Async): at every single return.  ``weights=weight`` sets
      ``d_i = (sum_j 1 / tau_j) tau_i p_i`` (unbiased); ``weights=identical`` ``d_i = 1``,
      which optimises the surrogate weighted by ``1 / tau_i``, towards the fast clients.

    ``p_i`` is ``importance``: ``uniform`` (the code's default) or ``num_examples``.  The
    code defines no FedFix_identical, so ``weights=identical`` needs ``period=null``.
    FedFix with ``period >= 1`` is synchronous FedAvg with round time dt, and the code's
    FedBuff-c_identical is ``strategy=fedbuff`` with ``concurrency=num_nodes``,
    ``buffer_size=c`` and ``staleness=constant``.  The clock must be deterministic per
    client, as fedsim's is, and the clients always up (no churn), as in the paper.

    Two departures from the code, both at ties: a task that ends at an aggregation instant
    up to float rounding (``TOLERANCE``) is in time for it, where the code's exact ``<=``
    sometimes drops it from a step its weight counts on; and in Async, clients returning at
    the same instant are applied one step each (the lower id first, as the code's argmin)
    but all restart after the last of those steps, where the code restarts each after its
    own (the shared event loop's rule: at one instant every arrival comes before any start).
    """

    handles_churn = False

    def __init__(
        self,
        period: float | None = 0.5,
        weights: str = "weight",
        importance: str = "uniform",
        server_lr: float = 1.0,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
        fresh_optimizer: bool = True,
    ) -> None:
        # every client trains at all times: concurrency is set to num_nodes in validate
        super().__init__(1, local_epochs, local_steps, None, fresh_optimizer)
        check(
            period is None or 0 < period < np.inf,
            f"strategy.period={period} must be > 0 and finite (or null: aggregate at every "
            "return, Async)",
        )
        check(
            weights in WEIGHTS,
            f"strategy.weights={weights!r} is not one of: {', '.join(WEIGHTS)}",
        )
        check(
            period is None or weights == "weight",
            f"strategy.weights={weights} needs strategy.period=null (Async): FedFix's weights "
            "are ceil(tau_i / dt) p_i, the code defines no FedFix_identical",
        )
        check(
            importance in IMPORTANCES,
            f"strategy.importance={importance!r} is not one of: {', '.join(IMPORTANCES)}",
        )
        check(server_lr > 0, f"strategy.server_lr={server_lr} must be > 0")
        self.period, self.weights, self.importance = period, weights, importance
        self.optimizer = None if server_lr == 1 else ServerMomentum(server_lr, 0.0)
        self.task_time: np.ndarray | None = None  # tau_i, seconds
        self.dt: float | None = None  # seconds between aggregations (None: Async)
        self.d: np.ndarray | None = None  # the aggregation weights d_i
        self.p: np.ndarray | None = None  # the clients' importance p_i

    def validate(self, federation: Federation) -> None:
        self.concurrency = federation.num_nodes
        super().validate(federation)

    def setup(self, federation: Federation) -> None:
        """Time each client's task on the clock, then set dt and the weights d_i."""
        if self.d is not None:
            return
        n = federation.num_nodes
        self.concurrency = n
        clock = Clock(federation.network, n + 1, federation, federation.batch_size)
        tau = clock.task_times(
            np.arange(n),
            self.local_epochs,
            self.local_steps,
            federation.bytes_on("downlink"),
            federation.bytes_on("uplink"),
        )
        check(
            bool(np.all(np.isfinite(tau) & (tau > 0))),
            f"strategy=fedfix needs every client's task time > 0 and finite; the network "
            f"gives {tau.min():.3g} to {tau.max():.3g} s (give compute, latency or bandwidth "
            "a finite cost)",
        )
        examples = np.asarray(federation.num_examples, dtype=np.float64)
        p = np.full(n, 1 / n) if self.importance == "uniform" else examples / examples.sum()
        if self.period is not None:
            self.dt = self.period * float(tau.max())
            self.d = np.ceil(tau / self.dt - TOLERANCE) * p
        elif self.weights == "weight":
            self.d = float(np.sum(1 / tau)) * tau * p
        else:
            self.d = np.ones(n)
        self.task_time, self.p = tau, p

    def plan(self, round_idx: int, federation: Federation) -> RoundPlan:
        self.setup(federation)
        if self.dt is None:  # Async: the shared event loop with a buffer of one
            return super().plan(round_idx, federation)
        events = self.window(round_idx, federation)
        server = np.array([federation.num_nodes])
        steps: list[Step] = []
        if events.started:
            started = np.sort(np.array(events.started))
            steps.append(Average(server, started, np.ones(1), base=BASE))
            steps.append(self.local_training(started))
        if events.arrived:
            order = np.argsort(events.arrived, kind="stable")
            arrived = np.array(events.arrived)[order]
            staleness = np.array(events.staleness)[order]
            steps.append(self.server_update(arrived, staleness, server))
            self._count(staleness)
        self.version += 1  # one step per dt, whoever returned
        self.now = events.time
        return RoundPlan(tuple(steps), finished_at=events.time)

    def window(self, round_idx: int, federation: Federation) -> Events:
        """FedFix's step n: the clients that returned since the last instant get the model
        now, at n dt; every task that ends by (n + 1) dt is aggregated then."""
        assert self.dt is not None
        generator = rng.generator(federation.seed, rng.SAMPLING, round_idx)
        clock = Clock(
            federation.network, federation.num_nodes + 1, federation, federation.batch_size
        )
        events = Events([], [], [], [], [], self.now)
        waiting: set[int] = set()
        self._start(events, waiting, generator, clock, federation)  # all idle clients
        deadline = (self.version + 1) * self.dt  # as the code: no drift over many steps
        while self.tasks and self.tasks[0].end <= deadline * (1 + TOLERANCE):
            self._arrive(heapq.heappop(self.tasks), events, waiting)
        events.time = deadline
        return events

    def server_update(
        self, arrived: np.ndarray, staleness: np.ndarray, server: np.ndarray
    ) -> Average:
        assert self.d is not None
        return Average(arrived, server, self.d[arrived], update=self.optimizer, base=BASE)

    def surrogate(self) -> np.ndarray:
        """The clients' weights in the objective the scheme converges to: ``p_i`` with
        ``weights=weight`` (each client's expected weight per unit time is ``p_i`` times a
        constant), ``1 / tau_i`` normalised with Async_identical (the code's ``P_surr``;
        for FedFix the code logs ``ceil(tau_i / dt)`` normalised, a logging quantity)."""
        assert self.p is not None and self.task_time is not None
        if self.weights == "identical":
            return (1 / self.task_time) / np.sum(1 / self.task_time)
        return self.p
