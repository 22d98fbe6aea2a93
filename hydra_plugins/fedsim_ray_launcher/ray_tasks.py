"""A thin Hydra launcher that runs each job of a multirun as one Ray task.

Hydra's own Ray launcher pins ``cloudpickle<3``, which conflicts with joblib 1.6; this one
needs nothing beyond Ray, which fedsim already depends on.  ``fedsim run -m
hydra/launcher=fedsim_ray ...`` starts a local Ray that listens on 127.0.0.1 only
(:func:`fedsim.backends.ray_local.init_local_ray`, dashboard off) with
``hydra.launcher.num_cpus`` CPUs, or joins ``hydra.launcher.address``; each job takes
``hydra.launcher.cpus_per_job`` CPUs, so that many jobs run at once.  Every job writes its
run directory under ``hydra.sweep.dir`` as with the basic launcher.  The workers' own output is
not forwarded (Ray would prefix each line with its process and colour codes): the driver
prints each job's one line as the job ends.
"""

# No ``from __future__ import annotations``: Hydra scans plugins with a loader under which
# dataclasses cannot resolve string annotations.
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class RayTasksLauncherConf:
    _target_: str = "hydra_plugins.fedsim_ray_launcher.ray_tasks.RayTasksLauncher"
    num_cpus: Optional[int] = None  # of a local Ray (None: all of this machine's)  # noqa: UP045
    cpus_per_job: float = 1.0
    address: Optional[str] = None  # auto or ray://host:port joins a cluster  # noqa: UP045


ConfigStore.instance().store(
    group="hydra/launcher", name="fedsim_ray", node=RayTasksLauncherConf, provider="fedsim"
)


def _run(
    hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
) -> tuple[JobReturn, str]:
    """One job inside a Ray worker, as Hydra's basic launcher runs it, and its one line."""
    from fedsim.runner import SUMMARY, job_line  # not at Hydra's plugin scan

    setup_globals()
    HydraConfig.instance().set_config(config)
    result = run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    _ = result.return_value  # re-raises a job's exception in the worker
    summary = Path(result.hydra_cfg.hydra.runtime.output_dir) / SUMMARY
    if not summary.exists():  # a job that failed before it started its run
        return result, f"job {config.hydra.job.num}  failed before it started"
    return result, job_line(json.loads(summary.read_text()))


class RayTasksLauncher(Launcher):
    def __init__(
        self, num_cpus: int | None = None, cpus_per_job: float = 1.0, address: str | None = None
    ) -> None:
        self.num_cpus, self.cpus_per_job, self.address = num_cpus, cpus_per_job, address

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import ray

        from fedsim.backends.ray_local import init_local_ray  # not at Hydra's plugin scan

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        owns_ray = not ray.is_initialized()
        if owns_ray and self.address is None:
            init_local_ray(self.num_cpus)
        elif owns_ray:
            ray.init(
                address=self.address,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
        remote = ray.remote(num_cpus=self.cpus_per_job)(_run)
        log.info(f"Launching {len(job_overrides)} jobs on Ray")
        futures = []
        for offset, overrides in enumerate(job_overrides):
            index = initial_job_idx + offset
            log.info(f"\t#{index} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = index
                sweep_config.hydra.job.num = index
            futures.append(remote.remote(self.hydra_context, self.task_function, sweep_config))
        try:
            pending = list(futures)
            while pending:  # each job's line as it ends
                done, pending = ray.wait(pending, num_returns=1)
                print(ray.get(done[0])[1], flush=True)
            return [result for result, _ in ray.get(futures)]
        finally:
            if owns_ray:
                ray.shutdown()
