"""Our forward route through the FastAPI adapter behind Mangum (the way the local server answers
it, with an API Gateway event in front), for comparison with the Lambda entry point."""

from __future__ import annotations

from mangum import Mangum

from common.web.fastapi_app import create_app
from infra.local.server import routes_of

app = create_app(routes_of("forward"))
handler = Mangum(app, lifespan="off", api_gateway_base_path="/")
