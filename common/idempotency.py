"""Idempotent writes: an ``Idempotency-Key`` header on ``add_data``, ``retrain``, ``POST
/models`` and ``deploy`` makes a retry of the same request return the first answer and write
nothing; the same key with another request is a 422 that says so; keys expire after
``MLFN_IDEMPOTENCY_TTL_SECONDS`` (24 h).

Built on Powertools for AWS Lambda's idempotency utility: its DynamoDB persistence layer on the
service's table (items ``pk = IDEMPOTENCY``, ``sk = mlfn#<hash of the key>``), and the same
contract on SQL (``common/storage/idempotency_sql.py``) for SQLite and PostgreSQL. Only a
successful (2xx) answer is kept: an answer with an error status releases the key, so a corrected
retry with the same key runs. A request still running under a key answers 409.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from common.backends import Backends
from common.errors import BadRequest, Conflict, ServiceError, ServiceUnavailable
from common.settings import Settings
from common.web.request import Reply, Request

HEADER = "idempotency-key"
KEY = re.compile(r"[\x21-\x7e]{1,255}")
# How long a request may hold its key while it runs before a retry may run it again.
IN_PROGRESS_SECONDS = 900


class Unprocessable(ServiceError):
    status = 422
    error = "unprocessable"


class _Refused(Exception):
    """An answer with an error status: not stored, and the key is released."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def fingerprint(request: Request) -> str:
    """What makes two requests the same: method, path, query, content type and body."""
    digest = hashlib.sha256()
    for part in (request.method, request.path, repr(sorted(request.query.items())),
                 request.media_type):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(request.body)
    return digest.hexdigest()


def persistence_layer(backends: Backends) -> Any:
    """The Powertools persistence layer on the process's experiment store."""
    store = backends.experiments
    from common.storage.sql_store import SqlExperimentStore

    if isinstance(store, SqlExperimentStore):
        from common.storage.idempotency_sql import SqlPersistenceLayer

        return SqlPersistenceLayer(store)
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    from common.storage.dynamodb_store import DynamoExperimentStore

    assert isinstance(store, DynamoExperimentStore)
    return DynamoDBPersistenceLayer(table_name=store.table, key_attr="pk", sort_key_attr="sk",
                                    static_pk_value="IDEMPOTENCY",
                                    boto3_client=getattr(store, "client", None) or store._db)


def once(request: Request, settings: Settings, backends: Backends,
         answer: Callable[[], Reply]) -> Reply:
    """``answer()`` under the request's Idempotency-Key: run once, replayed afterwards."""
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyPersistenceLayerError,
        IdempotencyValidationError,
    )

    key = request.headers[HEADER]
    if not KEY.fullmatch(key):
        raise BadRequest("header Idempotency-Key must be 1-255 visible ASCII characters")
    config = IdempotencyConfig(event_key_jmespath="key", payload_validation_jmespath="request",
                               expires_after_seconds=int(settings.idempotency_ttl_seconds))
    lambda_context = request.context
    if not callable(getattr(lambda_context, "get_remaining_time_in_millis", None)):
        lambda_context = SimpleNamespace(get_remaining_time_in_millis=lambda: IN_PROGRESS_SECONDS * 1000)
    config.register_lambda_context(lambda_context)
    ran: list[bool] = []

    @idempotent_function(data_keyword_argument="data", persistence_store=persistence_layer(backends),
                         config=config, key_prefix="mlfn")
    def run(data: dict[str, str]) -> dict[str, Any]:
        ran.append(True)
        reply = answer()
        if reply.status >= 300:
            raise _Refused(reply)
        return {"status": reply.status, "body": base64.b64encode(reply.body).decode(),
                "content_type": reply.content_type, "headers": reply.headers}

    try:
        stored = run(data={"key": key, "request": fingerprint(request)})
    except _Refused as refused:
        return refused.reply
    except IdempotencyValidationError:
        raise Unprocessable(f"Idempotency-Key {key!r} was used for a different request (another "
                            "route, query or body); use a new key for a new request") from None
    except IdempotencyAlreadyInProgressError:
        raise Conflict(f"a request with Idempotency-Key {key!r} is still running; retry it "
                       "when it has answered") from None
    except IdempotencyPersistenceLayerError as exc:
        cause = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], BaseException) else exc
        if isinstance(cause, ServiceError):
            raise cause from None
        raise ServiceUnavailable(f"the idempotency store failed: {type(cause).__name__}; retry "
                                 "with the same key") from exc
    reply = Reply(int(stored["status"]), base64.b64decode(stored["body"]), stored["content_type"],
                  dict(stored["headers"]))
    if not ran:
        reply.headers["idempotent-replayed"] = "true"
    return reply
