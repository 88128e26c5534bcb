"""What /docs shows for the routes, which read their bodies themselves: the request bodies they
accept (so "Try it out" can send them) and the error answers they really give (400 with
``{"error", "detail"}``, never FastAPI's default 422). Importing it imports no web framework."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the routes import this module for their examples; Lambda has no FastAPI
    from fastapi import FastAPI

IRIS = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
IRIS_CSV = "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"
ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "detail": {}},
    "required": ["error", "detail"],
}
ERRORS = {
    "400": "bad request: malformed or invalid input; `detail` names the field, column or row",
    "404": "not found: unknown model, experiment or route, or nothing deployed",
    "503": "service unavailable: a store did not answer, or the server is at capacity "
           "(`Retry-After`); retry",
}


def _binary() -> dict[str, Any]:
    return {"schema": {"type": "string", "format": "binary"}}


def _multipart(field: str) -> dict[str, Any]:
    return {"schema": {"type": "object", "required": [field],
                       "properties": {field: {"type": "string", "format": "binary"}}}}


def body(
    json_example: Any = None,
    csv_example: str | None = None,
    zip_upload: bool = False,
    multipart_field: str | None = None,
) -> dict[str, Any]:
    """``openapi_extra`` describing a request body in the content types the route accepts."""
    content: dict[str, Any] = {}
    if json_example is not None:
        content["application/json"] = {"schema": {"type": "object"}, "example": json_example}
    if csv_example is not None:
        content["text/csv"] = {"schema": {"type": "string"}, "example": csv_example}
    if zip_upload:
        content["application/zip"] = _binary()
    if multipart_field:
        content["multipart/form-data"] = _multipart(multipart_field)
    return {"requestBody": {"required": True, "content": content}}


def document_errors(app: FastAPI) -> None:
    """Replace FastAPI's 422 validation answer with the 400/404 error bodies the service gives."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for status, description in ERRORS.items():
                    responses.setdefault(status, {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    })
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["Error"] = ERROR
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
