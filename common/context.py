"""Process-wide use-case objects, built once per process (one per warm Lambda instance)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from common.backends import Backends, default_backends, default_settings
from common.serving import Serving

if TYPE_CHECKING:  # the serving handlers never import the life-cycle code
    from common.batch_jobs import BatchJobs
    from common.ingestion import Ingestions
    from common.jobs import InProcessQueue, JobQueue
    from common.lifecycle import Lifecycle
    from common.oip.dataplane import DataPlane
    from common.settings import Settings


@cache
def serving() -> Serving:
    return Serving(default_backends())


@cache
def dataplane() -> DataPlane:
    """The Open Inference Protocol operations over ``serving()``."""
    from common.oip.dataplane import DataPlane

    return DataPlane(serving())


@cache
def warm_up() -> list[str]:
    """Once per process, before the first request: load the models named by
    ``MLFN_PRELOAD_MODELS`` (the serving Lambda entry points call this at import)."""
    settings = default_backends().settings
    return serving().preload(settings.preload_models) if settings.preload_models else []


def backends() -> Backends:
    return default_backends()


def settings() -> Settings:
    """The process settings (read once; building them touches no store)."""
    return default_settings()


def flush_monitoring() -> None:
    """Write the queued monitoring events now (the Lambda adapter, after each invocation)."""
    if serving.cache_info().currsize:
        serving().flush_shadow()
        serving().monitor.flush()


def reset() -> None:
    """Forget every process-wide object (tests switch settings through the environment)."""
    if _inprocess_queue.cache_info().currsize:
        queue = _inprocess_queue()
        queue.join()
        queue.close()
    if _task_pool.cache_info().currsize:
        _task_pool().close()  # lets a running task finish; starts no other
    if serving.cache_info().currsize:
        serving().monitor.close()
    for cached in (ingestions, batch_jobs, _task_pool, lifecycle, _inprocess_queue, warm_up, dataplane,
                   serving, default_backends, default_settings):
        cached.cache_clear()


@cache
def lifecycle() -> Lifecycle:
    """The life-cycle use cases; the queue is attached by whoever runs workers."""
    from common.lifecycle import Lifecycle

    return Lifecycle(default_backends(), serving(), _jobs())


def _jobs() -> JobQueue | None:
    settings = default_backends().settings
    if settings.job_queue == "sqs":
        from common.jobs import SqsQueue

        return SqsQueue(settings.queue_url, _sqs_client())
    return _inprocess_queue()


@cache
def _inprocess_queue() -> InProcessQueue:
    from common.jobs import InProcessQueue

    # Resolved lazily so the worker calls the lifecycle this process uses.
    return InProcessQueue(lambda: lifecycle().claimable_jobs(),
                          lambda job: lifecycle().run_job(job),
                          poll=default_settings().job_poll_seconds)


def _sqs_client() -> Any:
    import boto3

    return boto3.client("sqs")


def wait_for_jobs() -> None:
    """Block until the in-process worker has finished every claimable job (tests, CLI)."""
    if _inprocess_queue.cache_info().currsize:
        _inprocess_queue().join()
    if _task_pool.cache_info().currsize:
        _task_pool().join()


@cache
def ingestions() -> Ingestions:
    """Ingestions of uploads (``common/ingestion.py``): on the SQS ingest queue, or on this
    process's task pool (``MLFN_TASK_WORKERS`` threads, started on the first submit or by the
    server)."""
    from common.ingestion import Ingestions
    from common.tasks import SqsTasks

    settings = default_backends().settings
    if settings.job_queue == "sqs":
        return Ingestions(default_backends(), SqsTasks(settings.ingest_queue_url, _sqs_client()))
    return Ingestions(default_backends(), _task_pool())


@cache
def _task_pool() -> Any:
    from common.tasks import TaskPool

    settings = default_settings()
    # Resolved lazily so the pool runs the ingestions and batch jobs this process uses.
    return TaskPool(lambda: [{"task": "ingest", "id": i} for i in ingestions().claimable()]
                    + batch_jobs().claimable(), _run_task,
                    workers=settings.task_workers, poll=settings.job_poll_seconds)


def _run_task(task: dict[str, Any]) -> Any:
    if task["task"] == "ingest":
        return ingestions().run(task["id"])
    return batch_jobs().run(task)


@cache
def batch_jobs() -> BatchJobs:
    """Batch scoring jobs (``common/batch_jobs.py``): on the SQS batch queue, or on this
    process's task pool (the one ingestions use)."""
    from common.batch_jobs import BatchJobs
    from common.tasks import SqsTasks

    settings = default_backends().settings
    if settings.job_queue == "sqs":
        return BatchJobs(default_backends(), SqsTasks(settings.batch_queue_url, _sqs_client()))
    return BatchJobs(default_backends(), _task_pool())
