"""POST /batch_jobs?model=NAME&upload=ID[&experiment=N]: score an upload of any size (a CSV, or a
zip of images for an image model) in the background (202); GET /batch_jobs?model=NAME: the model's jobs; GET /batch_jobs/{id}: its
progress and download link; POST /batch_jobs/{id}/cancel; GET /batch_jobs/{id}/result: the
result CSV, where the service serves it itself (without S3)."""

from typing import Any

from common import context
from common.errors import BadRequest
from common.web.guard import json_reply
from common.web.request import Reply, Request
from common.web.routing import Param, Route, model_query


def start_batch_job(request: Request, model: str, upload: str, experiment: int | None) -> Any:
    """Score an upload (sent through POST /uploads: a CSV file with a header row, or for an
    image model a zip of images) with the model's deployed experiment, or `experiment`: 202,
    the rows are scored in chunks in the background and GET /batch_jobs/{id} says how it goes.
    A row (or image) that fails /forward_batch's checks fails the job, naming it; no result is
    written then. While the job runs its upload cannot be ingested (409)."""
    if request.body:
        raise BadRequest("send no body: the rows are the upload's (query parameter 'upload')")
    started = context.batch_jobs().start(model, upload, experiment)
    reply = json_reply(started, 202)
    reply.headers["location"] = started["url"]
    return reply


def batch_job(request: Request, job_id: str, model: str | None) -> Any:
    """The job: status, chunks done of total, rows, rows/s and, once succeeded, `result` with
    its download URL (presigned on S3). With `model`, 404 unless the job is that model's."""
    return context.batch_jobs().status(job_id, model)


def list_batch_jobs(request: Request, model: str) -> Any:
    """The model's batch jobs, newest first (a job's record is kept 30 days)."""
    return context.batch_jobs().of_model(model)


def cancel_batch_job(request: Request, job_id: str) -> Any:
    """Stop a job that has not ended: it is failed as cancelled (`cancelled: true`), its chunk
    outputs are removed and no result is published. 409 if it ended first."""
    if request.body:
        raise BadRequest("send no body: POST /batch_jobs/{job_id}/cancel takes none")
    return context.batch_jobs().cancel(job_id)


def batch_result(request: Request, job_id: str) -> Any:
    """The result CSV of a succeeded job: row (for a zip, then the image's file), prediction
    and one probability per class."""
    return Reply(200, content_type="text/csv; charset=utf-8",
                 headers={"content-disposition": f'attachment; filename="batch-{job_id}.csv"'},
                 stream=context.batch_jobs().result(job_id))


JOB_ID = Param("job_id", str, where="path", description="the id POST /batch_jobs answered")
ROUTES = [
    Route("POST", "/batch_jobs", start_batch_job,
          (model_query(), Param("upload", str, description="the id of a received upload (CSV, or zip of images)"),
           Param("experiment", int, required=False, minimum=1,
                 description="score with this experiment (default: the deployed one)")),
          status=202, idempotent=True, tags=("predict",)),
    Route("GET", "/batch_jobs", list_batch_jobs, (model_query(),), tags=("predict",)),
    Route("GET", "/batch_jobs/{job_id}", batch_job, (JOB_ID, model_query(required=False)),
          tags=("predict",)),
    Route("POST", "/batch_jobs/{job_id}/cancel", cancel_batch_job, (JOB_ID,), tags=("predict",)),
    Route("GET", "/batch_jobs/{job_id}/result", batch_result, (JOB_ID,), tags=("predict",)),
]
