"""Experiments page against the live server: table, metric chart, deploy, roll back, history,
canary and shadow with their live metrics; a stand-in server on DynamoDB for what it lacks."""

from __future__ import annotations

import requests

from tests.ui.conftest import (
    api,
    assert_clean,
    by_label,
    chart_titles,
    make_opener,
    static_api,
    texts,
    train,
    wait_finished,
    wait_for,
)

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def deployed_of(url: str, model: str) -> int | None:
    return {m["name"]: m["deployed_experiment_id"] for m in api(url, "GET", "/models")}[model]


def test_compare_deploy_and_roll_back(open_page, api_url):
    first = deployed_of(api_url, "iris")
    extra = train(api_url, "iris", "random_forest", hyperparameters={"n_estimators": 11})
    at = open_page("views/experiments.py", model="iris")
    table = at.dataframe[0].value
    assert list(table["experiment_id"]) == [extra["experiment_id"], first]  # newest first
    assert {"accuracy", "f1_macro", "log_loss"} <= set(table.columns)
    assert table.set_index("experiment_id").loc[first, "deployed"]
    assert chart_titles(at) == ["f1_macro per experiment (higher is better)"]
    by_label(at.selectbox, "Compare").set_value("log_loss").run()
    assert chart_titles(at) == ["log_loss per experiment (lower is better)"]

    assert by_label(at.selectbox, "Succeeded experiment").value == extra["experiment_id"]
    by_label(at.button, f"Deploy #{extra['experiment_id']}").click().run()
    assert_clean(at)
    assert f"Deployed #{extra['experiment_id']} for **iris** (previously #{first})" in texts(at.success)
    assert deployed_of(api_url, "iris") == extra["experiment_id"]

    by_label(at.button, f"Roll back to #{first}").click().run()
    assert_clean(at)
    assert deployed_of(api_url, "iris") == first
    history = api(api_url, "GET", "/deployments", params={"model": "iris"})
    assert [h["experiment_id"] for h in history] == [first, extra["experiment_id"], first]
    assert list(at.dataframe[-1].value["experiment_id"]) == [first, extra["experiment_id"], first]


def test_status_filter_and_failed_deploy_message(open_page, api_url):
    at = open_page("views/experiments.py", model="wine")
    at.segmented_control[0].set_value("failed").run()
    assert_clean(at)
    assert "No failed experiments for **wine**" in texts(at.info)


def rollout_of(url: str, model: str) -> dict:
    return api(url, "GET", "/rollout", params={"model": model})


def markdown(at) -> str:
    return texts(at.markdown)


def test_canary_and_shadow_from_the_page(open_page, api_url):
    champion = deployed_of(api_url, "iris")
    queued = [api(api_url, "PUT", "/retrain", params={"model": "iris"},
                  json={"model_class": c, "deploy": "never"})["experiment_id"]
              for c in ("logistic_regression", "random_forest")]
    canary, shadow = (wait_finished(api_url, i)["experiment_id"] for i in queued)
    at = open_page("views/experiments.py", model="iris")
    assert {f"**Champion:** #{champion}", "**Canary:** none", "**Shadow:** none"} <= set(markdown(at).split("\n"))

    # a guarded canary at 30%
    by_label(at.selectbox, "Canary experiment").set_value(canary)
    by_label(at.slider, "Share of requests (%)").set_value(30)
    by_label(at.toggle, "Guard: end it when it does worse than the champion").set_value(True).run()
    by_label(at.button, f"Start canary #{canary} at 30%").click().run()
    assert_clean(at)
    assert f"Canary #{canary} answers 30% of the requests, guarded." in texts(at.success)
    state = rollout_of(api_url, "iris")
    assert (state["canary"]["experiment_id"], state["canary"]["share"], state["canary"]["guard"]) == (canary, 30, True)
    assert f"**Canary:** #{canary} · 30% of requests · guard on" in markdown(at)
    table = at.dataframe[0].value.set_index("experiment_id")
    assert table.loc[canary, "rollout"] == "canary 30%" and table.loc[champion, "rollout"] == ""

    # the canary cannot also be the shadow: only the other one is offered
    assert by_label(at.selectbox, "Shadow experiment").options == [f"#{shadow}"]
    by_label(at.button, f"Start shadow #{shadow} on 100%").click().run()
    assert_clean(at)
    assert rollout_of(api_url, "iris")["shadow"]["experiment_id"] == shadow
    assert f"**Shadow:** #{shadow} · scores every request" in markdown(at)

    # live metrics, side by side: each side's requests as the answers said (the shadow scores
    # every request), outcomes for all of them
    answered = []
    for i in range(20):
        reply = requests.post(f"{api_url}/forward", params={"model": "iris"}, json=ROW,
                              headers={"X-Request-Id": f"ui-{i}"}, timeout=10)
        answered.append(reply.json()["experiment_id"])
    api(api_url, "POST", "/feedback", params={"model": "iris"},
        json=[{"request_id": f"ui-{i}", "label": "setosa"} for i in range(20)])
    expected = {f"#{champion} champion": answered.count(champion), f"#{shadow} shadow": 20}
    if canary in answered:
        expected[f"#{canary} canary"] = answered.count(canary)
    wait_for(lambda: {f"#{e['experiment_id']} {e['role']}": e["requests"] for e in
                      api(api_url, "GET", "/live_metrics", params={"model": "iris"})["experiments"]}
             == expected)
    by_label(at.button, "Refresh").click().run()
    assert_clean(at)
    live = at.dataframe[1].value
    assert live.loc["requests"].to_dict() == expected
    assert live.loc["with outcome"].to_dict() == expected
    assert {"accuracy", "f1_macro", "p99 latency (ms)"} <= set(live.index)
    assert by_label(at.metric, "Shadow agrees with the champion").value.endswith("%")

    # the history shows the rollout events between the deploys, and can show deploys only
    history = at.dataframe[-1].value
    assert list(history["event"])[:2] == ["shadow started", "canary started"]
    assert "deploy" in set(history["event"])
    assert list(history["detail"])[:2] == ["sample 100%", "30% of requests · guard on"]
    by_label(at.segmented_control, "Show").set_value(["deploys"]).run()
    assert set(at.dataframe[-1].value["event"]) == {"deploy"}

    # the shadow again: a smaller sample
    assert f"#{shadow} is the shadow: starting it again changes its sample." in texts(at.caption)
    by_label(at.slider, "Sample of requests (%)").set_value(40).run()
    by_label(at.button, f"Start shadow #{shadow} on 40%").click().run()
    assert_clean(at)
    assert rollout_of(api_url, "iris")["shadow"]["sample"] == 40
    assert f"**Shadow:** #{shadow} · scores 40% of requests" in markdown(at)
    by_label(at.segmented_control, "Show").set_value(["shadow"]).run()
    changed = at.dataframe[-1].value.iloc[0]
    assert (changed["event"], changed["detail"]) == ("shadow sample changed", "sample 40% · was 100%")

    by_label(at.button, f"End shadow #{shadow}").click().run()
    assert_clean(at)
    assert rollout_of(api_url, "iris")["shadow"] is None
    assert "**Shadow:** none" in markdown(at)

    # promoting the canary deploys it; its "canary ended" event is now the newest row, and the
    # roll back still goes to the deploy before
    by_label(at.button, f"Promote #{canary}").click().run()
    assert_clean(at)
    assert deployed_of(api_url, "iris") == canary
    rows = api(api_url, "GET", "/deployments", params={"model": "iris"})
    assert (rows[0]["event"], rows[0]["reason"]) == ("canary ended", "promoted")
    by_label(at.button, f"Roll back to #{champion}").click().run()
    assert_clean(at)
    assert deployed_of(api_url, "iris") == champion


def test_ending_a_canary(open_page, api_url):
    champion = deployed_of(api_url, "wine")
    other = train(api_url, "wine", "logistic_regression")["experiment_id"]
    api(api_url, "POST", f"/deploy/{other}", params={"model": "wine", "canary": 5})
    at = open_page("views/experiments.py", model="wine")
    assert f"**Canary:** #{other} · 5% of requests · guard off" in markdown(at)
    by_label(at.button, f"End canary #{other}").click().run()
    assert_clean(at)
    assert f"Ended canary #{other}: #{champion} answers every request again." in texts(at.success)
    assert rollout_of(api_url, "iris")["canary"] is None and rollout_of(api_url, "wine")["canary"] is None
    events = at.dataframe[-1].value
    assert list(events["event"])[:2] == ["canary ended", "canary started"]
    assert events["detail"].iloc[0] == "5% of requests · guard off · ended by request"


# A server on DynamoDB: rollouts but no inference log, so no live metrics; and a deploy row from
# before rollouts (no "event").
DYNAMO_ANSWERS = {
    "/models": (200, [{"name": "iris", "task": "classification", "target": "species", "input": "tabular",
                       "features": [], "deployed_experiment_id": 2}]),
    "/experiments": (200, [{"experiment_id": i, "model": "iris", "status": "succeeded",
                            "model_class": "random_forest", "hyperparameters": {}, "tune": False,
                            "metrics": {"f1_macro": 0.9}, "dataset_version": 1, "rows": 150,
                            "created_at": None, "started_at": None, "finished_at": None, "error": None}
                           for i in (3, 2, 1)]),
    "/deployments": (200, [
        {"event": "canary started", "experiment_id": 3, "at": "2026-01-02T00:00:00+00:00",
         "share": 10.0, "guard": False},
        {"model": "iris", "seq": 2, "experiment_id": 2, "previous": 1, "deployed_at": "2026-01-01T00:00:00Z"},
        {"model": "iris", "seq": 1, "experiment_id": 1, "previous": None, "deployed_at": "2025-12-31T00:00:00Z"},
    ]),
    "/rollout": (200, {"model": "iris", "deployed": 2, "history": [],
                       "canary": {"experiment_id": 3, "share": 10.0, "guard": False,
                                  "since": "2026-01-02T00:00:00+00:00"}, "shadow": None}),
    "/live_metrics": (404, {"error": "not found", "detail": "live metrics and feedback need the inference log"}),
}


def test_a_server_without_live_metrics(monkeypatch):
    with static_api(DYNAMO_ANSWERS) as url:
        monkeypatch.setenv("MLFN_UI_API_URL", url)
        at = make_opener()("views/experiments.py", model="iris")
    assert "Live metrics are not available on this server" in texts(at.info)
    assert not at.error
    assert "**Canary:** #3 · 10% of requests · guard off" in markdown(at)
    assert "since 2026-01-02 00:00:00 UTC" in texts(at.caption)
    assert "Deployed now: #2; before it: #1." in markdown(at)  # the deploy row, not the event above it
    history = at.dataframe[-1].value
    assert list(history["event"]) == ["canary started", "deploy", "deploy"]
    assert list(history["experiment_id"]) == [3, 2, 1]
    assert list(history["previous"].fillna(0)) == [0, 1, 0]  # an event replaces no deploy
    assert history["detail"].iloc[0] == "10% of requests · guard off"
