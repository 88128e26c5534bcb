"""Safe rollouts: a canary answers a share of a model's traffic, a shadow scores the same
requests without answering, feedback brings the true outcomes back, live metrics compare the
sides, and a guarded canary is ended automatically when it does worse than the champion.

The routing itself is in ``common/serving.py`` (``Serving.route``, ``Serving.shadow``); the
state lives in ``common/storage/rollouts.py``; the calls each side answered are in the
inference log (SQL stores), where feedback joins them by request id.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np

from common.backends import Backends
from common.catalog import HIGHER_IS_BETTER, PRIMARY_METRIC
from common.domain import ExperimentStatus, Task
from common.errors import BadRequest, Conflict, NotFound
from common.names import model_name
from common.payloads import parse_json
from common.storage.rollouts import Rollout, StaleRollout, now_iso, rollout_store, since

log = logging.getLogger("mlfn.rollouts")
MAX_FEEDBACK = 10_000
MAX_UNMATCHED_SHOWN = 20  # request ids without a logged call, named in the answer
WRITE_RETRIES = 20


def _need_log(backends: Backends) -> Any:
    store = backends.experiments
    if not hasattr(store, "calls_since"):
        raise NotFound("live metrics and feedback need the inference log, which this server keeps "
                       "only with the sqlite or postgres experiment store; on AWS the calls are "
                       "CloudWatch metrics and logs")
    return store


def feedback_store(backends: Backends) -> Any:
    from common.storage.feedback_sql import SqlFeedback

    return SqlFeedback(_need_log(backends))


def event(kind: str, experiment_id: int, **details: Any) -> dict[str, Any]:
    """One entry of a rollout's history (and of GET /deployments): what happened, to which
    experiment, when."""
    return {"event": kind, "experiment_id": experiment_id, "at": now_iso(), **details}


class Rollouts:
    def __init__(self, lifecycle: Any) -> None:
        self.life = lifecycle
        self.backends: Backends = lifecycle.backends
        self.store = rollout_store(self.backends.experiments)

    # -- state ----------------------------------------------------------------------------------
    def state(self, model: str) -> dict[str, Any]:
        record = self.backends.experiments.get_model(model_name(model))
        rollout = self.store.get(record.name)
        return {
            "model": record.name,
            "deployed": record.deployed_experiment_id,
            "canary": None if rollout.canary is None else {
                "experiment_id": rollout.canary, "share": rollout.share, "guard": rollout.guard,
                "since": rollout.canary_since},
            "shadow": None if rollout.shadow is None else {
                "experiment_id": rollout.shadow, "since": rollout.shadow_since,
                "sample": rollout.shadow_share},
            "history": rollout.history,
        }

    def _challenger(self, experiment_id: int, model: str | None, what: str) -> Any:
        exp = self.life.experiment(experiment_id, model)
        if exp.status is not ExperimentStatus.succeeded:
            raise Conflict(f"experiment {experiment_id} has status {exp.status.value}; only a "
                           f"succeeded experiment can be a {what}")
        deployed = self.backends.experiments.deployed_experiment(exp.model)
        if deployed is None:
            raise Conflict(f"model {exp.model!r} has nothing deployed: deploy a champion before a {what}")
        if deployed == experiment_id:
            raise Conflict(f"experiment {experiment_id} is the deployed one; a {what} is another "
                           "experiment")
        return exp

    def _change(self, model: str, change: Callable[[Rollout], Rollout | None]) -> None:
        """Apply ``change`` to the stored rollout (None: nothing to write), again on the fresh
        record when another writer got there first: two concurrent changes both land."""
        for _ in range(WRITE_RETRIES):
            current = self.store.get(model)
            changed = change(current)
            if changed is None:
                return
            try:
                self.store.put(model, changed)
            except StaleRollout:
                continue
            self.life.serving.forget_pointer(model)
            return
        raise Conflict(f"the rollout of {model!r} kept changing while this request changed it; "
                       "retry")

    def start_canary(self, experiment_id: int, share: float, guard: bool,
                     model: str | None = None) -> dict[str, Any]:
        if not (isinstance(share, int | float) and 0 < share < 100 and math.isfinite(share)):
            raise BadRequest("query parameter 'canary' must be a share of the traffic in percent, "
                             f"above 0 and below 100, not {share!r}")
        exp = self._challenger(experiment_id, model, "canary")
        if guard and not hasattr(self.backends.experiments, "calls_since"):
            raise Conflict("a guarded canary compares the calls in the inference log, which only "
                           "the sqlite and postgres experiment stores keep; start it without "
                           "guard=true and watch the CloudWatch metrics per experiment")

        def change(current: Rollout) -> Rollout:
            if current.shadow == experiment_id:
                raise Conflict(f"experiment {experiment_id} is the shadow; end the shadow "
                               "(DELETE /shadow) before making it the canary")
            same = current.canary == experiment_id
            ended = self._ended(current, "replaced") if current.canary is not None and not same else []
            started = event("canary started", experiment_id, share=float(share), guard=guard)
            return dataclasses.replace(
                current, canary=experiment_id, share=float(share), guard=guard,
                canary_since=current.canary_since if same else started["at"],
                history=current.history + ended + [started])

        self._change(exp.model, change)
        return self.state(exp.model)

    def start_shadow(self, experiment_id: int, model: str | None = None,
                     sample: float = 100.0) -> dict[str, Any]:
        """Make ``experiment_id`` the shadow, scoring ``sample`` percent of the requests (chosen
        by request id); for the current shadow, change its sample."""
        exp = self._challenger(experiment_id, model, "shadow")

        def change(current: Rollout) -> Rollout | None:
            if current.canary == experiment_id:
                raise Conflict(f"experiment {experiment_id} is the canary; end the canary "
                               "(DELETE /canary) before making it the shadow")
            if current.shadow == experiment_id:
                if current.shadow_share == sample:
                    return None
                changed = event("shadow sample changed", experiment_id, sample=sample,
                                previous_sample=current.shadow_share)
                return dataclasses.replace(current, shadow_share=sample,
                                           history=current.history + [changed])
            ended = [] if current.shadow is None else [event("shadow ended", current.shadow,
                                                             reason="replaced")]
            started = event("shadow started", experiment_id, sample=sample)
            return dataclasses.replace(current, shadow=experiment_id, shadow_since=started["at"],
                                       shadow_share=sample,
                                       history=current.history + ended + [started])

        self._change(exp.model, change)
        return self.state(exp.model)

    @staticmethod
    def _ended(rollout: Rollout, reason: str) -> list[dict[str, Any]]:
        assert rollout.canary is not None
        return [event("canary ended", rollout.canary, share=rollout.share, guard=rollout.guard,
                      since=rollout.canary_since, reason=reason)]

    @staticmethod
    def _without_shadow(rollout: Rollout, reason: str) -> Rollout:
        assert rollout.shadow is not None
        return dataclasses.replace(rollout, shadow=None, shadow_since=None, history=rollout.history
                                   + [event("shadow ended", rollout.shadow, reason=reason)])

    @classmethod
    def _without_canary(cls, rollout: Rollout, reason: str) -> Rollout:
        return dataclasses.replace(rollout, canary=None, share=0.0, guard=False, canary_since=None,
                                   history=rollout.history + cls._ended(rollout, reason))

    def end_canary(self, model: str, reason: str = "ended by request",
                   experiment_id: int | None = None) -> dict[str, Any]:
        """End the canary (only if it is still ``experiment_id``, when given)."""
        name = model_name(model)
        self.backends.experiments.get_model(name)

        def change(current: Rollout) -> Rollout:
            if current.canary is None or experiment_id not in (None, current.canary):
                raise NotFound(f"model {name!r} has no canary"
                               + ("" if experiment_id is None else f" {experiment_id}"))
            return self._without_canary(current, reason)

        self._change(name, change)
        return self.state(name)

    def end_shadow(self, model: str) -> dict[str, Any]:
        name = model_name(model)
        self.backends.experiments.get_model(name)

        def change(current: Rollout) -> Rollout:
            if current.shadow is None:
                raise NotFound(f"model {name!r} has no shadow")
            return self._without_shadow(current, "ended by request")

        self._change(name, change)
        return self.state(name)

    def promoted(self, model: str, experiment_id: int) -> None:
        """After a deploy: a canary or shadow of the deployed experiment has done its job."""

        def change(current: Rollout) -> Rollout | None:
            if experiment_id not in (current.canary, current.shadow):
                return None
            changed = current
            if current.canary == experiment_id:
                changed = self._without_canary(current, "promoted")
            if current.shadow == experiment_id:
                changed = self._without_shadow(changed, "promoted")
            return changed

        self._change(model, change)

    def involved(self, model: str, experiment_id: int) -> str | None:
        """'canary' or 'shadow' if the experiment is one (it must not be deleted then)."""
        current = self.store.get(model)
        if current.canary == experiment_id:
            return "canary"
        if current.shadow == experiment_id:
            return "shadow"
        return None

    # -- feedback and live metrics --------------------------------------------------------------
    def feedback(self, model: str, items: Any) -> dict[str, Any]:
        record = self.backends.experiments.get_model(model_name(model))
        if not isinstance(items, list) or not items:
            raise BadRequest('body must be [{"request_id", "label"}, ...] (or a CSV with the '
                             "header request_id,label)")
        if len(items) > MAX_FEEDBACK:
            raise BadRequest(f"{len(items)} outcomes; the limit is {MAX_FEEDBACK} per request")
        rows = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "request_id" not in item or "label" not in item:
                raise BadRequest(f"outcome {i}: expected {{\"request_id\", \"label\"[, \"row\"]}}")
            request_id, label, row = item["request_id"], item["label"], item.get("row", 0)
            if not isinstance(request_id, str) or not 0 < len(request_id) <= 200:
                raise BadRequest(f"outcome {i}: request_id must be the string the answer carried")
            if isinstance(row, bool) or not isinstance(row, int) or row < 0:
                raise BadRequest(f"outcome {i}: row must be a non-negative integer")
            rows.append((request_id, row, self._label(record.task, label, i)))
        feedback_store(self.backends).add(record.name, rows)
        if self.store.get(record.name).guard:  # the outcomes may be what condemns the canary
            self.check_guard(record.name)
        # Which outcomes found their call: an unknown id is usually a client that did not send
        # (or keep) the X-Request-Id its answer carried. Kept anyway: the call may be logged yet.
        self.life.serving.monitor.flush()
        ids = [request_id for request_id, _, _ in rows]
        logged = _need_log(self.backends).logged_requests(record.name, ids)
        unmatched = list(dict.fromkeys(i for i in ids if i not in logged))
        return {"model": record.name, "outcomes": len(rows),
                "matched": sum(1 for i in ids if i in logged),
                "unmatched": unmatched[:MAX_UNMATCHED_SHOWN]}

    @staticmethod
    def _label(task: Task, value: Any, i: int) -> Any:
        if task is Task.regression:
            if isinstance(value, str):  # a CSV field
                with contextlib.suppress(ValueError):
                    value = float(value)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise BadRequest(f"outcome {i}: label must be a finite number, not {value!r}")
            return float(value)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise BadRequest(f"outcome {i}: label must be a class (a string), not {value!r}")
        return str(value)

    def live_metrics(self, model: str, window_start: datetime | None) -> dict[str, Any]:
        record = self.backends.experiments.get_model(model_name(model))
        store = _need_log(self.backends)
        start = window_start or datetime(1970, 1, 1, tzinfo=UTC)
        calls = store.calls_since(record.name, start)
        truth = feedback_store(self.backends).since(record.name, start)
        return live(record.task, calls, truth)

    # -- guard ----------------------------------------------------------------------------------
    def check_guard(self, model: str) -> str | None:
        """End a guarded canary that does worse than the champion; the reason, or None."""
        rollout = self.store.get(model)
        if rollout.canary is None or not rollout.guard or rollout.canary_since is None:
            return None
        record = self.backends.experiments.get_model(model)
        if not hasattr(self.backends.experiments, "calls_since"):
            return None
        store = self.backends.experiments
        start = since(rollout.canary_since)
        assert start is not None
        calls = store.calls_since(model, start)
        reason = worse(record.task, calls, feedback_store(self.backends).since(model, start),
                       rollout.canary, self.backends.settings)
        if reason is not None:
            log.warning("model %s: canary %s ended: %s", model, rollout.canary, reason)
            try:
                self.end_canary(model, f"auto-rollback: {reason}", experiment_id=rollout.canary)
            except NotFound:  # ended meanwhile (a request, another worker's guard)
                return None
        return reason


def _metric(task: Task, pairs: list[tuple[Any, Any]]) -> dict[str, float]:
    """Live metrics of (prediction, true outcome) pairs, as scikit-learn defines them."""
    if not pairs:
        return {}
    pred, true = zip(*pairs, strict=True)
    if task is Task.regression:
        p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
        return {"rmse": float(np.sqrt(np.mean((p - t) ** 2))), "mae": float(np.mean(np.abs(p - t)))}
    p, t = np.asarray([str(x) for x in pred]), np.asarray([str(x) for x in true])
    f1 = []
    for c in sorted(set(p) | set(t)):  # the labels of either side, as sklearn's f1_score
        tp = float(np.sum((p == c) & (t == c)))
        fp = float(np.sum((p == c) & (t != c)))
        fn = float(np.sum((p != c) & (t == c)))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": float(np.mean(p == t)), "f1_macro": float(np.mean(f1))}


def _sides(calls: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for call in calls:
        if call["experiment_id"] is not None:
            out.setdefault((call["role"], int(call["experiment_id"])), []).append(call)
    return out


def _joined(calls: list[dict[str, Any]], truth: dict[tuple[str, int], Any]) -> list[tuple[Any, Any]]:
    pairs = []
    for call in calls:
        for row, prediction in enumerate(call["predictions"] or []):
            label = truth.get((call["request_id"], row))
            if label is not None:
                pairs.append((prediction, label))
    return pairs


def live(task: Task, calls: list[dict[str, Any]], truth: dict[tuple[str, int], Any]) -> dict[str, Any]:
    sides = _sides([c for c in calls if c["status"] == 200])
    out: list[dict[str, Any]] = []
    by_request: dict[str, dict[str, list[Any]]] = {}
    for (role, experiment_id), side in sorted(sides.items()):
        pairs = _joined(side, truth)
        latencies = sorted(c["latency_ms"] for c in side)
        out.append({"experiment_id": experiment_id, "role": role, "requests": len(side),
                    "with_outcome": len(pairs), "metrics": _metric(task, pairs),
                    "p99_latency_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]})
        for call in side:
            by_request.setdefault(call["request_id"], {})[role] = call["predictions"] or []
    both = [r for r in by_request.values() if "shadow" in r and ("champion" in r or "canary" in r)]
    agreement = None
    if both:
        same = [r["shadow"] == r.get("champion", r.get("canary")) for r in both]
        agreement = {"requests": len(both), "shadow_agrees": float(np.mean(same))}
    return {"experiments": out, "agreement": agreement}


def worse(task: Task, calls: list[dict[str, Any]], truth: dict[tuple[str, int], Any],
          canary: int, settings: Any) -> str | None:
    """Why the canary does worse than the champion over the window, or None."""
    canary_calls = [c for c in calls if c["role"] == "canary" and c["experiment_id"] == canary]
    champion_calls = [c for c in calls if c["role"] == "champion"]
    if len(canary_calls) < settings.guard_min_requests or not champion_calls:
        return None

    def error_rate(side: list[dict[str, Any]]) -> float:
        return float(np.mean([c["status"] >= 500 for c in side]))

    def p99(side: list[dict[str, Any]]) -> float:
        return float(np.percentile([c["latency_ms"] for c in side], 99))

    if error_rate(canary_calls) - error_rate(champion_calls) > settings.guard_error_margin:
        return (f"error rate {error_rate(canary_calls):.1%} against the champion's "
                f"{error_rate(champion_calls):.1%}")
    if (p99(canary_calls) > settings.guard_latency_ratio * p99(champion_calls)
            and p99(canary_calls) - p99(champion_calls) > settings.guard_latency_floor_ms):
        return f"p99 latency {p99(canary_calls):.2f} ms against the champion's {p99(champion_calls):.2f} ms"
    ok = [c for c in canary_calls if c["status"] == 200]
    ours, theirs = _joined(ok, truth), _joined([c for c in champion_calls if c["status"] == 200], truth)
    enough = settings.guard_min_requests // 2
    if len(ours) >= enough and len(theirs) >= enough:
        metric = PRIMARY_METRIC[task]
        mine, champion = _metric(task, ours)[metric if task is Task.classification else "mae"], \
            _metric(task, theirs)[metric if task is Task.classification else "mae"]
        higher = HIGHER_IS_BETTER.get(metric, True) if task is Task.classification else False
        gap = (champion - mine) if higher else (mine - champion)
        scale = 1.0 if task is Task.classification else max(abs(champion), 1e-12)
        if gap / scale > settings.guard_metric_margin:
            name = metric if task is Task.classification else "mae"
            return f"{name} {mine:.4g} against the champion's {champion:.4g} on live outcomes"
    return None


def parse_feedback(kind: str, data: bytes) -> list[Any]:
    """A feedback body: a JSON list of {"request_id", "label"[, "row"]}, or a CSV with the header
    ``request_id,label[,row]``."""
    if kind == "json":
        return cast(list[Any], parse_json(data))
    if kind != "csv":
        raise BadRequest("send the outcomes as JSON or CSV")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the CSV body is not UTF-8") from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    if header[:2] != ["request_id", "label"] or header[2:] not in ([], ["row"]):
        raise BadRequest(f"the CSV header must be request_id,label[,row], not {','.join(header)[:80]!r}")
    items: list[Any] = []
    for line, fields in enumerate(reader, start=2):
        if not fields:
            continue
        if len(fields) != len(header):
            raise BadRequest(f"CSV line {line}: {len(fields)} fields, the header has {len(header)}")
        item: dict[str, Any] = {"request_id": fields[0], "label": fields[1]}
        if len(fields) == 3:
            if not fields[2].isdigit():
                raise BadRequest(f"CSV line {line}: row must be a non-negative integer, not "
                                 f"{fields[2][:40]!r}")
            item["row"] = int(fields[2])
        items.append(item)
    return items


def parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"query parameter 'since' must be an ISO 8601 time, not {value[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment

