"""The Lambda entry point of `functions/rollouts` (template.yaml:
`functions.rollouts.handler.handler`): API Gateway events answered by the routes of `routes.py`,
without a web framework."""

from common.web.lambda_events import lambda_entry
from functions.rollouts.routes import ROUTES

handler = lambda_entry(ROUTES)
