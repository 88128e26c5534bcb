"""The checks a conditional write makes, in one place for every ExperimentStore.

An adapter implements only how to read an experiment and write it back atomically
(:meth:`ConditionalExperimentWrites._change_experiment`: a locked transaction in SQL, a
revision-checked put in DynamoDB). What a write expects of the stored record — its status, its
attempt number (the fencing token of a training attempt) and its lease — is checked here, so
every adapter refuses the same writes with the same :class:`Conflict`. So are the conditions of
removing a dataset part (:func:`check_removable`) and of deleting a model
(:func:`check_deletable`), which each adapter checks on what it read inside its transaction (SQL)
or before its conditional write (DynamoDB).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Final, Literal

from common.domain import DatasetPart, Experiment, ExperimentStatus
from common.errors import Conflict, NotFound

# A job of the model is still to run or running: deleting the model now would pull its data and
# rows away under it. (succeeded and failed are final: nothing moves an experiment out of them.)
UNFINISHED = (ExperimentStatus.queued, ExperimentStatus.running)


class _Unset(Enum):
    token = 0


UNSET: Final = _Unset.token
"""``expected_lease_until=UNSET``: the lease is not checked (None expects no lease)."""

LeaseExpectation = datetime | None | Literal[_Unset.token]


@dataclass(frozen=True)
class Expectation:
    """What the stored experiment must be for a write to apply; None (UNSET for the lease)
    checks nothing."""

    status: ExperimentStatus | None = None
    attempts: int | None = None
    lease_until: LeaseExpectation = UNSET

    def check(self, current: Experiment) -> None:
        """Raise Conflict, naming what differs, unless ``current`` is as expected."""
        if self.status is not None and current.status is not self.status:
            raise Conflict(
                f"experiment {current.id} has status {current.status.value}, "
                f"expected {self.status.value}"
            )
        if self.attempts is not None and current.attempts != self.attempts:
            raise Conflict(
                f"experiment {current.id} is on attempt {current.attempts}, "
                f"not {self.attempts}: a later attempt took the job over"
            )
        if self.lease_until is not UNSET and current.lease_until != self.lease_until:
            raise Conflict(
                f"experiment {current.id}'s lease was renewed (now until {current.lease_until}, "
                f"not {self.lease_until}): its worker is alive"
            )


class ConditionalExperimentWrites:
    """The experiment writes of :class:`common.storage.ports.ExperimentStore` that check an
    :class:`Expectation`, on top of one atomic read-change-write an adapter provides."""

    def _change_experiment(
        self, experiment_id: int, change: Callable[[Experiment], Experiment]
    ) -> Experiment:
        """Read the experiment (NotFound if it does not exist), write ``change(current)`` back
        unless another write came in between (then ``change`` sees the newer record), and
        return what was written. ``change`` may raise to write nothing."""
        raise NotImplementedError

    def update_experiment(
        self,
        experiment_id: int,
        fields: dict[str, Any],
        expected_status: ExperimentStatus | None = None,
        expected_attempts: int | None = None,
        expected_lease_until: LeaseExpectation = UNSET,
    ) -> Experiment:
        expected = Expectation(expected_status, expected_attempts, expected_lease_until)

        def change(current: Experiment) -> Experiment:
            expected.check(current)
            return Experiment.model_validate({**current.model_dump(), **fields})

        return self._change_experiment(experiment_id, change)

    def renew_lease(self, experiment_id: int, attempt: int, until: datetime) -> Experiment:
        return self.update_experiment(
            experiment_id, {"lease_until": until},
            expected_status=ExperimentStatus.running, expected_attempts=attempt,
        )


def check_removable(model: str, version: int, part: DatasetPart | None) -> DatasetPart:
    """The part added in dataset version ``version``, if it can be removed: NotFound if there
    is none, Conflict if a later version removed it already."""
    if part is None:
        raise NotFound(f"model {model!r} has no dataset part {version} (a part is named by the "
                       "dataset version that added it: see GET /datasets)")
    if part.removed_in is not None:
        raise Conflict(f"dataset part {version} of model {model!r} was removed already, in "
                       f"dataset version {part.removed_in}")
    return part


def check_deletable(model: str, experiments: Iterable[Experiment]) -> None:
    """Conflict, naming the oldest one, if an experiment of the model is queued or running."""
    unfinished = sorted((e for e in experiments if e.status in UNFINISHED), key=lambda e: e.id)
    if unfinished:
        first = unfinished[0]
        more = f" (and {len(unfinished) - 1} more)" if len(unfinished) > 1 else ""
        raise Conflict(f"model {model!r} has experiment {first.id} {first.status.value}{more}; "
                       "delete the model when its jobs have ended")
