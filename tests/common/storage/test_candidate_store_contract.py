"""One contract for the tuning candidates' records on every experiment store: SQLite, DynamoDB
(moto server), PostgreSQL. One record per candidate, every write a compare-and-set."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from common.domain import ExperimentStatus
from common.storage.candidates import Candidate, CandidateStore, StaleCandidate, candidate_store
from common.storage.ports import ExperimentStore
from tests.common.storage.test_experiment_store_contract import store  # noqa: F401  (the fixture)


@pytest.fixture
def candidates(store: ExperimentStore) -> CandidateStore:  # noqa: F811
    return candidate_store(store)


def grid(experiment_id: int, n: int) -> list[Candidate]:
    return [Candidate(experiment_id=experiment_id, index=i, params={"C": float(i), "k": None})
            for i in range(n)]


def test_create_is_idempotent_and_keeps_what_was_written(candidates: CandidateStore) -> None:
    candidates.create(grid(7, 3))
    first = candidates.list(7)[0]
    candidates.put(first.model_copy(update={"status": ExperimentStatus.running, "attempts": 1}))
    candidates.create(grid(7, 3))  # a second recording of the same plan
    got = candidates.list(7)
    assert [c.index for c in got] == [0, 1, 2]
    assert got[0].status is ExperimentStatus.running and got[0].attempts == 1
    assert got[1].params == {"C": 1.0, "k": None}
    assert candidates.list(8) == []


def test_a_write_on_a_stale_revision_is_refused(candidates: CandidateStore) -> None:
    candidates.create(grid(1, 1))
    read = candidates.list(1)[0]
    written = candidates.put(read.model_copy(update={"attempts": 1}))
    assert written.revision == read.revision + 1
    with pytest.raises(StaleCandidate):
        candidates.put(read.model_copy(update={"attempts": 5}))
    assert candidates.list(1)[0].attempts == 1


def test_candidates_finishing_at_once_lose_no_score(candidates: CandidateStore) -> None:
    candidates.create(grid(3, 8))
    read = candidates.list(3)

    def finish(c: Candidate) -> None:
        candidates.put(c.model_copy(update={"status": ExperimentStatus.succeeded, "mean": c.index / 10,
                                            "std": 0.0, "scoring": "f1_macro"}))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(finish, read))
    got = candidates.list(3)
    assert [c.mean for c in got] == pytest.approx([i / 10 for i in range(8)])
    assert {c.status for c in got} == {ExperimentStatus.succeeded}


def test_delete(candidates: CandidateStore) -> None:
    candidates.create(grid(4, 2))
    candidates.create(grid(5, 1))
    candidates.delete(4)
    assert candidates.list(4) == []
    assert len(candidates.list(5)) == 1
