"""The baseline: a pickled native scikit-learn (or CatBoost) Pipeline served "the usual way".

``pickle.loads`` the fitted Pipeline from the object store on first use, then answers with
``pipeline.predict_proba(pd.DataFrame([record]))``, from a plain FastAPI app (``async def``
endpoints, orjson, no middleware) behind Mangum on Lambda (``handler``) and under uvicorn for
the server benchmark (``app``).

``floor_handler`` is the same transport with no model at all: the cost of the event path alone.
"""

from __future__ import annotations

import pickle
from functools import cache
from typing import Any

import numpy as np
import orjson
import pandas as pd
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response
from mangum import Mangum

from common import context


def native_key(model: str) -> str:
    """Where the bench stores the pickled native model, next to the ONNX artefacts."""
    return f"{model}/native.pkl"


@cache
def native_model(model: str) -> dict[str, Any]:
    """``{"pipeline", "task", "classes"}`` as pickled by the bench; loaded once per process."""
    return pickle.loads(context.backends().models.get(native_key(model)))  # type: ignore[no-any-return]


def predict(model: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    native = native_model(model)
    frame = pd.DataFrame(records)
    if native["task"] == "regression":
        return {"model": model, "predictions": native["pipeline"].predict(frame).tolist()}
    probs = native["pipeline"].predict_proba(frame)
    classes = native["classes"]
    keys = [str(c) for c in classes]
    return {
        "model": model,
        "predictions": [classes[int(i)] for i in np.argmax(probs, axis=1)],
        "probabilities": [dict(zip(keys, row, strict=True)) for row in probs.tolist()],
    }


def json_response(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


router = APIRouter()


@router.post("/forward")
async def forward(request: Request, model: str = Query(...)):  # type: ignore[no-untyped-def]
    record = orjson.loads(await request.body())
    out = predict(model, [record])
    answer = {"model": model, "prediction": out["predictions"][0]}
    if "probabilities" in out:
        answer["probabilities"] = out["probabilities"][0]
    return json_response(answer)


@router.post("/forward_batch")
async def forward_batch(request: Request, model: str = Query(...)):  # type: ignore[no-untyped-def]
    doc = orjson.loads(await request.body())
    return json_response(predict(model, doc["records"]))


@router.get("/health")
async def health():  # type: ignore[no-untyped-def]
    return json_response({"status": "ok"})


app = FastAPI()
app.include_router(router)
handler = Mangum(app, lifespan="off", api_gateway_base_path="/")

floor_router = APIRouter()


@floor_router.post("/forward")
async def floor(request: Request, model: str = Query(...)):  # type: ignore[no-untyped-def]
    orjson.loads(await request.body())
    return json_response({"model": model, "prediction": None})


floor_app = FastAPI()
floor_app.include_router(floor_router)
floor_handler = Mangum(floor_app, lifespan="off", api_gateway_base_path="/")
