"""PUT /add_data?model=NAME: labelled rows (JSON records, CSV body, multipart field `file`) or,
for image models, a labelled zip of images; with &upload=ID, the ingestion of an upload of any
size (POST /uploads), answered 202 at once."""

from typing import Any

from common import context
from common.errors import BadRequest
from common.web import docs
from common.web.bodies import upload_file
from common.web.guard import json_reply
from common.web.request import Request
from common.web.routing import Param, Route, model_query

EXAMPLE = {"records": [{"tenure": 8, "charges": 66.0, "plan": "basic", "churned": "yes"},
                       {"tenure": 70, "charges": 19.9, "plan": "premium", "churned": "no"}]}


def add_data(request: Request, model: str, upload: str | None) -> Any:
    """Append labelled rows (JSON records, a CSV body or multipart field `file`), or a labelled
    zip of images, as one new dataset version; all or nothing. With `upload` (a CSV file sent
    through POST /uploads), 202: the file is ingested in the background, all or nothing, and
    GET /ingestions/{id} says how it went."""
    if upload is not None:
        if request.body:
            raise BadRequest("send either a body or query parameter 'upload', not both")
        started = context.ingestions().start(model, upload)
        reply = json_reply(started, 202)
        reply.headers["location"] = started["url"]
        return reply
    kind, data, filename = upload_file(request)
    if filename is None:  # a JSON, CSV or zip body
        return context.lifecycle().add_frame_or_archive(model, kind, data)
    return context.lifecycle().add_frame_or_archive(model, kind, data, "multipart", filename or None)


UPLOAD = Param("upload", str, required=False,
               description="an upload's id (POST /uploads): ingest that file, answered 202")
ROUTES = [Route("PUT", "/add_data", add_data, (model_query(), UPLOAD), idempotent=True, tags=("data",),
                openapi=docs.body(EXAMPLE, "tenure,charges,plan,churned\n1,95.5,basic,yes\n"
                                  "40,20.0,premium,no\n", zip_upload=True,
                                  multipart_field="file"))]
