"""PUT /add_data?model=NAME: labelled rows as JSON records, a CSV body or multipart field `file`."""

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from common import context
from common.web.app import create_app, json_response, lambda_handler
from common.web.bodies import records_of, upload

router = APIRouter(tags=["data"])


def _add(model: str, kind: str, data: bytes) -> dict:
    from common.training.datasets import frame_from_csv, frame_from_records

    frame = frame_from_csv(data) if kind == "csv" else frame_from_records(records_of(data))
    return context.lifecycle().add_frame(model, frame)


@router.put("/add_data")
async def add_data(request: Request, model: str = Query(..., description="model name")):  # type: ignore[no-untyped-def]
    kind, data = await upload(request, context.backends().settings)
    return json_response(await run_in_threadpool(_add, model, kind, data))


app = create_app([router])
handler = lambda_handler(app)
