"""Run by tests/infra/test_grpc.py in a process of its own: tritonclient registers the same
``inference.*`` protobuf symbols as the server's generated modules, so the two never share a
process. Reads a JSON job on stdin, prints one JSON answer: what the clients got back."""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def inputs_of(module: Any, metadata: dict[str, Any], rows: list[dict[str, Any]],
              binary: bool) -> list[Any]:
    out = []
    for spec in metadata["inputs"]:
        name = spec["name"]
        if spec["datatype"] == "BYTES":
            array = np.array([[str(r[name])] for r in rows], dtype=object)
        else:
            array = np.array([[r[name]] for r in rows], dtype=np.float32)
        tensor = module.InferInput(name, list(array.shape), spec["datatype"])
        if module is httpclient:
            tensor.set_data_from_numpy(array, binary_data=binary)
        else:
            tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


def answer(result: Any, outputs: list[str]) -> dict[str, Any]:
    doc = {}
    for name in outputs:
        array = result.as_numpy(name)
        if array.dtype == object:
            doc[name] = [v.decode() if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
        else:
            doc[name] = array.tolist()
    return doc


class Keyed:
    """A tritonclient client that sends ``headers`` (the API key) on every call."""

    def __init__(self, client: Any, headers: dict[str, str]) -> None:
        self._client, self._headers = client, headers

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        # A copy per call: tritonclient adds its own headers to the dict it is given.
        return lambda *args, **kwargs: method(*args, headers=dict(self._headers), **kwargs)


def error(call: Any) -> str:
    try:
        call()
    except InferenceServerException as exc:
        return f"{exc.status()} {exc.message()}"
    return "no error"


def main() -> None:
    job = json.load(sys.stdin)
    headers = job.get("headers") or {}
    http = Keyed(httpclient.InferenceServerClient(job["http"]), headers)
    grpc = Keyed(grpcclient.InferenceServerClient(job["grpc"]), headers)
    out: dict[str, Any] = {
        "http_live": http.is_server_live(), "http_ready": http.is_server_ready(),
        "grpc_live": grpc.is_server_live(), "grpc_ready": grpc.is_server_ready(),
        "http_server": http.get_server_metadata(),
        "grpc_server": grpc.get_server_metadata(as_json=True), "models": {}}
    if headers:
        bare = httpclient.InferenceServerClient(job["http"])
        out["without_key"] = {"http": error(lambda: bare.get_model_metadata(next(iter(job["models"])))),
                              "grpc": error(lambda: grpcclient.InferenceServerClient(job["grpc"])
                                            .get_model_metadata(next(iter(job["models"]))))}
    for model, rows in job["models"].items():
        metadata = http.get_model_metadata(model)
        names = [o["name"] for o in metadata["outputs"]]
        version = metadata["versions"][-1]
        results = {
            "http_binary": answer(http.infer(model, inputs_of(httpclient, metadata, rows, True)), names),
            "http_json": answer(http.infer(
                model, inputs_of(httpclient, metadata, rows, False),
                outputs=[httpclient.InferRequestedOutput(n, binary_data=False) for n in names]),
                names),
            "grpc": answer(grpc.infer(model, inputs_of(grpcclient, metadata, rows, True)), names),
            "grpc_version": answer(grpc.infer(model, inputs_of(grpcclient, metadata, rows, True),
                                              model_version=version), names),
            "http_version": answer(http.infer(model, inputs_of(httpclient, metadata, rows, True),
                                              model_version=version), names),
            "grpc_metadata": grpc.get_model_metadata(model, as_json=True),
            "ready": [http.is_model_ready(model), grpc.is_model_ready(model),
                      http.is_model_ready(model, version), grpc.is_model_ready(model, "999999")],
        }
        out["models"][model] = {"metadata": metadata, "results": results}
    first = next(iter(job["models"]))
    metadata = out["models"][first]["metadata"]
    rows = job["models"][first]
    out["errors"] = {
        "http_unknown_model": error(lambda: http.infer("ghost", inputs_of(httpclient, metadata, rows, True))),
        "grpc_unknown_model": error(lambda: grpc.infer("ghost", inputs_of(grpcclient, metadata, rows, True))),
        "http_unknown_version": error(lambda: http.infer(first, inputs_of(httpclient, metadata, rows, True),
                                                         model_version="999999")),
        "grpc_unknown_version": error(lambda: grpc.infer(first, inputs_of(grpcclient, metadata, rows, True),
                                                         model_version="999999")),
        "grpc_missing_input": error(lambda: grpc.infer(first, inputs_of(grpcclient, metadata, rows, True)[1:])),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
