"""fedsim's Hydra launcher: every job of a sweep as a Ray task (``hydra/launcher=fedsim_ray``)."""
