"""One outcome for every process of a distributed run: a failure in one is raised in all.

With ``strategy="ddp"`` each process runs ``train()`` itself. When one of them fails, the
others either wait in a collective operation until the failed process exits (and then see
only a lost connection), or finish their own part and return as if training had succeeded.
:func:`shared_outcome` makes every process end ``train()`` the same way: the failed process
writes its error into the process group's key-value store (the one its processes met
through, hosted by rank 0), and every other process raises :class:`DistributedTrainingError`
with that error, whether it failed in turn or finished.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Iterator

import torch.distributed as dist

#: Seconds a process that finished training waits for the others to finish or fail.
FINISH_TIMEOUT_S = 300.0
#: Seconds between two looks at the store while waiting.
POLL_INTERVAL_S = 0.05

# train() calls of this process in distributed runs; every process makes the same calls in
# the same order (each runs the same script), so the n-th call has the same keys everywhere
_distributed_calls = itertools.count()


class DistributedTrainingError(RuntimeError):
    """Training failed in another process of a distributed run.

    Raised by ``train()`` in every process but the one that failed, which raises its own
    error.

    Parameters
    ----------
    message
        What failed: the failed process's rank, error type and message.
    rank
        Global rank of the process that failed.
    """

    def __init__(self, message: str, rank: int):
        super().__init__(message)
        self.rank = rank


class _RunOutcome:
    """Keys of one ``train()`` call in the process group's store: failures and finishes."""

    def __init__(self, store: dist.Store, call: int, rank: int, world_size: int):
        self.store = store
        self.prefix = f"gexbert_train/{call}"
        self.rank = rank
        self.world_size = world_size

    def _failures(self) -> int:
        return self.store.add(f"{self.prefix}/n_failed", 0)

    def _first_failure(self) -> DistributedTrainingError:
        report = json.loads(self.store.get(f"{self.prefix}/failed/1"))
        message = (
            f"Process {report['rank']} of {self.world_size} failed: {report['type']}: "
            f"{report['message']}"
        )
        return DistributedTrainingError(message, report["rank"])

    def report_failure(self, error: BaseException) -> DistributedTrainingError | None:
        """Record this process's failure; return the error of an earlier one, if any."""
        order = self.store.add(f"{self.prefix}/n_failed", 1)
        report = {"rank": self.rank, "type": type(error).__name__, "message": str(error)}
        self.store.set(f"{self.prefix}/failed/{order}", json.dumps(report))
        return None if order == 1 else self._first_failure()

    def finish(self, timeout: float) -> None:
        """Record that this process finished; wait until every process finished or one failed.

        Raises
        ------
        DistributedTrainingError
            If another process failed, or did not finish within ``timeout`` seconds.
        """
        self.store.set(f"{self.prefix}/finished/{self.rank}", "1")
        others = [rank for rank in range(self.world_size) if rank != self.rank]
        deadline = time.monotonic() + timeout
        while True:
            if self._failures():
                raise self._first_failure()
            others = [r for r in others if not self.store.check([f"{self.prefix}/finished/{r}"])]
            if not others:
                return
            if time.monotonic() > deadline:
                msg = (
                    f"Process {others[0]} of {self.world_size} did not finish training within "
                    f"{timeout:.0f} s after process {self.rank} did, nor report a failure."
                )
                raise DistributedTrainingError(msg, others[0])
            time.sleep(POLL_INTERVAL_S)


def _current_run(world_size: int) -> _RunOutcome | None:
    """Return the outcome keys of this call where it is one of several processes, else None."""
    if world_size < 2 or not (dist.is_available() and dist.is_initialized()):
        return None
    store = dist.distributed_c10d._get_default_store()
    return _RunOutcome(store, next(_distributed_calls), dist.get_rank(), world_size)


@contextlib.contextmanager
def shared_outcome(world_size: int, timeout: float = FINISH_TIMEOUT_S) -> Iterator[None]:
    """Make every process of a distributed training call succeed or fail together.

    A process that fails records its error (type and message) in the process group's store
    and raises it; if another process had failed before, it raises
    :class:`DistributedTrainingError` with that first error instead (its own is then a
    consequence, such as a lost connection), chained from its own. A process that finishes
    waits until every other process has finished too, and raises the first failure if one
    failed. With one process, or before the process group exists, nothing changes.

    Parameters
    ----------
    world_size
        Number of processes of the run (the trainer's ``world_size``).
    timeout
        Seconds a finished process waits for the others.

    Raises
    ------
    DistributedTrainingError
        In every process but the failed one, when a process failed.
    """
    try:
        yield
    except BaseException as error:
        run = _current_run(world_size)
        if run is None:
            raise
        try:
            earlier = run.report_failure(error)
        except Exception:  # the store is gone with rank 0: this error is all there is
            raise error from None
        if earlier is not None:
            raise earlier from error
        raise
    run = _current_run(world_size)
    if run is not None:
        run.finish(timeout)
