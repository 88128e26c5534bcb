"""GET /artifacts/{experiment_id}/{name}: download one of an experiment's files (its ONNX model,
its TensorBoard event files), as listed by GET /metrics/{experiment_id}."""

from common import context
from common.web.request import Reply, Request
from common.web.routing import Param, Route, experiment_id


def artifact(request: Request, experiment_id: int, name: str) -> Reply:
    """One of an experiment's files (its ONNX model, TensorBoard event files), as listed by
    GET /metrics/{experiment_id}."""
    data = context.lifecycle().artifact(experiment_id, name)
    filename = name.rsplit("/", 1)[-1].replace('"', "")
    return Reply(200, data, "application/octet-stream",
                 {"content-disposition": f'attachment; filename="{filename}"'})


ROUTES = [Route("GET", "/artifacts/{experiment_id}/{name:path}", artifact,
                (experiment_id(), Param("name", where="path", description="the file's name")),
                tags=("experiments",))]
