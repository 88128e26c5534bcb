"""GET /artifacts/{experiment_id}/{name}: download one of an experiment's files (its ONNX model,
its TensorBoard event files), as listed by GET /metrics/{experiment_id}."""

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from common import context
from common.web.app import ExperimentId, create_app, lambda_handler

router = APIRouter(tags=["experiments"])


@router.get("/artifacts/{experiment_id}/{name:path}")
async def artifact(experiment_id: ExperimentId, name: str) -> Response:
    data = await run_in_threadpool(context.lifecycle().artifact, experiment_id, name)
    filename = name.rsplit("/", 1)[-1]
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


app = create_app([router])
handler = lambda_handler(app)
