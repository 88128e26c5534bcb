"""The checks a conditional experiment write makes, in one place for every ExperimentStore.

An adapter implements only how to read an experiment and write it back atomically
(:meth:`ConditionalExperimentWrites._change_experiment`: a locked transaction in SQL, a
revision-checked put in DynamoDB). What a write expects of the stored record — its status, its
attempt number (the fencing token of a training attempt) and its lease — is checked here, so
every adapter refuses the same writes with the same :class:`Conflict`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Final, Literal

from common.domain import Experiment, ExperimentStatus
from common.errors import Conflict


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
