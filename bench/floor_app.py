"""The floor of the server benchmark: a bare FastAPI app serving the service's own exported ONNX
file with ONNX Runtime, orjson in and out, nothing else (no validation beyond a KeyError, no
monitoring, no API key, no limits).

It keeps the one constraint the service must keep too: the model runs off the event loop, in a
thread pool (``run_in_executor``), so a slow model never freezes the server. Run it as uvicorn
does ours: ``MLFN_FLOOR_ONNX=path uvicorn bench.floor_app:app --loop uvloop --http httptools``.
"""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(os.environ["MLFN_FLOOR_ONNX"], options,
                               providers=["CPUExecutionProvider"])
INPUTS = [i.name for i in session.get_inputs()]
OUTPUTS = [o.name for o in session.get_outputs()]
CLASSES = [str(c) for c in json.loads(session.get_modelmeta().custom_metadata_map["classes"])]
pool = ThreadPoolExecutor(os.cpu_count() or 1)
app = FastAPI()


def predict(records: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, float]]]:
    feeds = {name: np.array([[r[name]] for r in records], dtype=np.float32) for name in INPUTS}
    _, probabilities = session.run(OUTPUTS, feeds)
    rows = probabilities.tolist()
    labels = [CLASSES[i] for i in np.argmax(probabilities, axis=1)]
    return labels, [dict(zip(CLASSES, row, strict=True)) for row in rows]


def forward_body(body: bytes) -> bytes:
    labels, probabilities = predict([orjson.loads(body)])
    return orjson.dumps({"prediction": labels[0], "probabilities": probabilities[0]})


def batch_body(body: bytes) -> bytes:
    labels, probabilities = predict(orjson.loads(body)["records"])
    return orjson.dumps({"predictions": labels, "probabilities": probabilities})


@app.post("/forward")
async def forward(request: Request) -> Response:
    body = await request.body()
    out = await asyncio.get_running_loop().run_in_executor(pool, forward_body, body)
    return Response(out, media_type="application/json")


@app.post("/forward_batch")
async def forward_batch(request: Request) -> Response:
    body = await request.body()
    out = await asyncio.get_running_loop().run_in_executor(pool, batch_body, body)
    return Response(out, media_type="application/json")


@app.get("/health")
async def health() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")
