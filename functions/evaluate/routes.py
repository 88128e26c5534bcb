"""POST /evaluate?model=NAME: labelled records (JSON, CSV) or a labelled zip of images, scored by
the deployed model."""

from typing import Any

from common import context
from common.web import docs
from common.web.bodies import upload
from common.web.request import Request
from common.web.routing import Route, model_query

LABELLED_CSV = (docs.IRIS_CSV.replace("petal_width\n", "petal_width,species\n")
                .replace("0.2\n", "0.2,setosa\n").replace("2.3\n", "2.3,virginica\n"))


def evaluate(request: Request, model: str) -> Any:
    """Labelled records (JSON, CSV) or a labelled zip of images, scored by the deployed model."""
    kind, data = upload(request)
    return context.serving().evaluate_upload(model, kind, data)


ROUTES = [Route("POST", "/evaluate", evaluate, (model_query(),), tags=("predict",),
                openapi=docs.body({"records": [{**docs.IRIS, "species": "setosa"}]}, LABELLED_CSV,
                                  zip_upload=True, multipart_field="file"))]
