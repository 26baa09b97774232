"""Multi-process runs (TPU pods, multi-node GPU, or several processes on one machine): one JAX process per host.

Every process runs the same command; :func:`initialize` joins them (``jax.distributed``), after which
``jax.devices()`` lists every device of every process and the training mesh spans them all. What changes with more
than one process (the rest of the library is unchanged):

* data: each process reads only the rows of each global batch that its own devices hold
  (:func:`sparsejax.sharding.place_batch`, ``jax.make_array_from_process_local_data``);
* files: only process 0 writes the run directory (config, metrics, TensorBoard, reports, exported models);
  orbax checkpoints are saved collectively by all processes (the run directory must be on a shared filesystem);
* exports gather the sharded parameters to every host first (a collective: all processes call it).

Launch scripts: ``experiments/launch/`` (TPU pod, SLURM multi-node GPU, two processes on this machine).
"""
from __future__ import annotations


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join the processes of a run. With no arguments JAX auto-detects the cluster (Cloud TPU pods, SLURM, ...);
    otherwise give all three (``coordinator`` is ``host:port`` of process 0). CPU processes use gloo collectives.
    Call before anything touches a device."""
    import jax

    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ValueError("give --coordinator HOST:PORT, --num-processes N and --process-id I together (or none of "
                         "them, to auto-detect a TPU pod / SLURM cluster)")
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id {process_id} must be in [0, {num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


def is_main() -> bool:
    """True in process 0 (the one that writes files), and in a single-process run."""
    import jax

    return jax.process_index() == 0


def gather(tree):
    """Host numpy copies of (possibly sharded across processes) arrays, on every process (a collective when there
    is more than one process)."""
    import jax

    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
