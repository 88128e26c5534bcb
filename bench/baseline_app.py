"""The baseline: a pickled native scikit-learn (or CatBoost) Pipeline served "the usual way".

``pickle.loads`` the fitted Pipeline from the object store on first use, then answers with
``pipeline.predict_proba(pd.DataFrame([record]))``. It is built with the same app factory,
middleware, body parsing, JSON encoder and Mangum adapter as ``functions/forward/app.py``, and
its endpoints are ``async def`` like ours, so the transport is identical and only the model
runtime differs.

``floor_handler`` is the same transport with no model at all: the cost of the event path alone.
"""

from __future__ import annotations

import pickle
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Query, Request

from common import context
from common.web.app import create_app, json_response, lambda_handler
from common.web.bodies import read_json


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


router = APIRouter()


@router.post("/forward")
async def forward(request: Request, model: str = Query(...)):  # type: ignore[no-untyped-def]
    record = await read_json(request, context.backends().settings)
    out = predict(model, [record])
    answer = {"model": model, "prediction": out["predictions"][0]}
    if "probabilities" in out:
        answer["probabilities"] = out["probabilities"][0]
    return json_response(answer)


@router.post("/forward_batch")
async def forward_batch(request: Request, model: str = Query(...)):  # type: ignore[no-untyped-def]
    doc = await read_json(request, context.backends().settings)
    return json_response(predict(model, doc["records"]))


app = create_app([router])
handler = lambda_handler(app)

floor_router = APIRouter()


@floor_router.post("/forward")
async def floor(request: Request, model: str = Query(...)):  # type: ignore[no-untyped-def]
    await read_json(request, context.backends().settings)
    return json_response({"model": model, "prediction": None})


floor_handler = lambda_handler(create_app([floor_router]))
