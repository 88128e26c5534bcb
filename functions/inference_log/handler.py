"""The Lambda entry point of `functions/inference_log` (template.yaml: `functions.inference_log.handler.handler`):
API Gateway events answered by the routes of `routes.py`, without a web framework."""

from common.web.lambda_events import lambda_entry
from functions.inference_log.routes import ROUTES

handler = lambda_entry(ROUTES)
