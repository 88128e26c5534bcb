"""POST /uploads?model=NAME: where to send a file of any size; GET /uploads/{id}; POST
/uploads/{id}/complete (S3 multipart); PUT /uploads/{id}/content (the service's own upload
URL, without S3); GET /ingestions/{id}: an ingestion started by PUT /add_data?upload=ID."""

from pathlib import Path
from typing import Any

from common import context
from common.errors import BadRequest
from common.web.request import Request
from common.web.routing import Param, Route, model_query


def _uploads() -> Any:
    from common.uploads import Uploads

    return Uploads(context.backends())


def upload_id(description: str = "the id POST /uploads answered") -> Param:
    return Param("upload_id", str, where="path", description=description)


def create_upload(request: Request, model: str, size: int | None, filename: str | None) -> Any:
    """Announce a file for the model's data: the answer says where to PUT its bytes (a presigned
    S3 URL, presigned parts above 100 MiB, or this service's own URL), then ingest it with
    PUT /add_data?model=NAME&upload=ID. Uploads expire after MLFN_UPLOAD_EXPIRY_SECONDS."""
    return _uploads().create(model, size, filename)


def upload_status(request: Request, upload_id: str) -> Any:
    """The upload: pending (with its URLs) until its bytes are there, then received."""
    return _uploads().status(upload_id)


def complete_upload(request: Request, upload_id: str) -> Any:
    """Finish an S3 multipart upload once every part is PUT (the service lists the parts)."""
    return _uploads().complete(upload_id)


def upload_content(request: Request, upload_id: str) -> Any:
    """The upload's bytes, streamed to the object store (stores other than S3)."""
    if request.media_type == "multipart/form-data":
        raise BadRequest("the body is a multipart form (curl -F); send the file's bytes "
                         "themselves as the body (curl --data-binary @file, Content-Type "
                         "application/octet-stream)")
    path = None if request.body_path is None else Path(request.body_path)
    return _uploads().receive(upload_id, path, request.body)


def ingestion(request: Request, ingestion_id: str, model: str | None) -> Any:
    """An ingestion: queued, running (rows read so far), succeeded (the new dataset version) or
    failed (what was wrong, and the row); a failed ingestion changed nothing."""
    return context.ingestions().status(ingestion_id, model)


ROUTES = [
    Route("POST", "/uploads", create_upload,
          (model_query(),
           Param("size", int, required=False, minimum=1,
                 description="the file's size in bytes (on S3 a file above 100 MiB is sent in "
                             "parts, which needs it)"),
           Param("filename", str, required=False, description="kept with the dataset part")),
          status=201, idempotent=True, tags=("data",)),
    Route("GET", "/uploads/{upload_id}", upload_status, (upload_id(),), tags=("data",)),
    Route("POST", "/uploads/{upload_id}/complete", complete_upload, (upload_id(),),
          tags=("data",)),
    Route("PUT", "/uploads/{upload_id}/content", upload_content, (upload_id(),), streamed=True,
          tags=("data",)),
    Route("GET", "/ingestions/{ingestion_id}", ingestion,
          (Param("ingestion_id", str, where="path", description="the id PUT /add_data answered"),
           model_query(required=False)), tags=("data",)),
]
