"""Export a fitted pipeline to ONE ONNX graph with provenance, behind a parity gate.

CatBoost's own ONNX export refuses categorical features (catboost#863), so CatBoost models are
converted as the last step of the scikit-learn pipeline: the tree-ensemble node CatBoost emits is
placed after the skl2onnx preprocessing graph, which already one-hot encodes the categories.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
from sklearn.pipeline import Pipeline

from common.domain import Feature, FeatureKind, ImageSpec, Task
from common.errors import ParityError
from common.images import INPUT_NAME
from common.inference.onnx_model import OnnxModel

# skl2onnx (1.20) reads SVC.probA_/probB_ while converting any SVC; scikit-learn 1.9 deprecated the
# attributes with SVC(probability=True), which we do not use: they are empty and only warn.
warnings.filterwarnings("ignore", message="Attribute `prob[AB]_`", category=FutureWarning)

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# Parity tolerances, documented in the README: float32 ONNX against the float64 native model.
PROBA_ATOL = 1e-4
REGRESSION_RTOL = 1e-4
PARITY_SAMPLE = 1000


@cache
def code_commit() -> str:
    """The git commit of the code doing the training, or ``unknown`` outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@cache
def _register_catboost() -> None:
    from catboost import CatBoostClassifier, CatBoostRegressor
    from catboost.utils import convert_to_onnx_object
    from onnx.helper import get_attribute_value
    from skl2onnx import update_registered_converter
    from skl2onnx._parse import _get_sklearn_operator_name
    from skl2onnx.common.data_types import Int64TensorType, guess_tensor_type
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    def parse_classifier(scope: Any, model: Any, inputs: Any, custom_parsers: Any = None) -> Any:
        op = scope.declare_local_operator(_get_sklearn_operator_name(type(model)), model)
        op.inputs = inputs
        op.outputs.append(scope.declare_local_variable("label", Int64TensorType()))
        op.outputs.append(
            scope.declare_local_variable("probabilities", guess_tensor_type(inputs[0].type))
        )
        # No ZipMap: probabilities stay a plain (n, classes) tensor like the sklearn models'.
        return op.outputs

    def convert(scope: Any, operator: Any, container: Any) -> None:
        onx = convert_to_onnx_object(operator.raw_operator)
        opsets = {d.domain: d.version for d in onx.opset_import}
        node = onx.graph.node[0]
        if not node.op_type.startswith("TreeEnsemble") or len(onx.graph.initializer):
            raise ParityError(f"unexpected CatBoost ONNX graph starting with {node.op_type}")
        attrs = {a.name: get_attribute_value(a) for a in node.attribute}
        container.add_node(
            node.op_type,
            [operator.inputs[0].full_name],
            [o.full_name for o in operator.outputs],
            op_domain=node.domain,
            op_version=opsets.get(node.domain),
            **attrs,
        )

    update_registered_converter(
        CatBoostClassifier,
        "CatBoostCatBoostClassifier",
        calculate_linear_classifier_output_shapes,
        convert,
        parser=parse_classifier,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        CatBoostRegressor,
        "CatBoostCatBoostRegressor",
        calculate_linear_regressor_output_shapes,
        convert,
    )


@cache
def _register_fast_trees() -> None:
    """skl2onnx's forest converters add each tree node by node in Python (~0.65 s for a forest of
    151 fully grown trees here, minutes for large ones): give them :func:`tree_attribute_pairs`,
    which appends the same values with whole-array operations (a test holds its output byte for
    byte to skl2onnx's own)."""
    from skl2onnx.operator_converters import random_forest

    original = random_forest.add_tree_to_attribute_pairs
    if getattr(original, "__name__", "") == "tree_attribute_pairs":
        return

    def tree_attribute_pairs(attr_pairs: Any, is_classifier: bool, tree: Any, tree_id: int,
                             tree_weight: float, weight_id_bias: int,
                             leaf_weights_are_counts: bool,
                             adjust_threshold_for_sklearn: bool = False,
                             dtype: Any = None) -> None:
        n = tree.node_count
        thresholds = np.asarray(tree.threshold[:n], dtype=np.float64)
        if (adjust_threshold_for_sklearn and dtype != np.float32) or n == 0 \
                or tree.value.ndim != 3 or not (np.abs(thresholds) < np.finfo(np.float32).max).all():
            original(attr_pairs, is_classifier, tree, tree_id, tree_weight, weight_id_bias,
                     leaf_weights_are_counts, adjust_threshold_for_sklearn, dtype=dtype)
            return
        ids = np.arange(n)
        left, right = tree.children_left[:n], tree.children_right[:n]
        branch = (left > ids) | (right > ids)
        if adjust_threshold_for_sklearn:  # skl2onnx's sklearn_threshold for float32 inputs
            near = thresholds.astype(np.float32)
            below = np.nextafter(near, np.float32(-np.inf))
            thresholds = np.where(near.astype(np.float64) <= thresholds, near, below).astype(
                np.float64)
        attr_pairs["nodes_treeids"].extend([tree_id] * n)
        attr_pairs["nodes_nodeids"].extend(range(n))
        attr_pairs["nodes_featureids"].extend(np.where(branch, tree.feature[:n], 0).tolist())
        attr_pairs["nodes_modes"].extend(np.where(branch, "BRANCH_LEQ", "LEAF").tolist())
        attr_pairs["nodes_values"].extend(np.where(branch, thresholds, 0.0).tolist())
        attr_pairs["nodes_truenodeids"].extend(np.where(branch, left, 0).tolist())
        attr_pairs["nodes_falsenodeids"].extend(np.where(branch, right, 0).tolist())
        attr_pairs["nodes_missing_value_tracks_true"].extend([0] * n)
        attr_pairs["nodes_hitrates"].extend([1.0] * n)
        leaves = np.flatnonzero(~branch)
        weights = np.asarray(tree.value[leaves], dtype=np.float64).reshape(len(leaves), -1)
        factor = np.full(len(leaves), float(tree_weight))
        if leaf_weights_are_counts:  # one division as skl2onnx's, by a sum in its order
            sums = np.cumsum(weights, axis=1)[:, -1]
            factor = factor / np.where(sums != 0.0, sums, 1.0)
        weights = weights * factor[:, None]
        if weights.shape[1] == 2 and is_classifier:
            weights = weights[:, 1:]
        k = weights.shape[1]
        kind = "class" if is_classifier else "target"
        attr_pairs[f"{kind}_treeids"].extend([tree_id] * (len(leaves) * k))
        attr_pairs[f"{kind}_nodeids"].extend(np.repeat(leaves, k).tolist())
        attr_pairs[f"{kind}_ids"].extend((np.tile(np.arange(k), len(leaves))
                                          + weight_id_bias).tolist())
        attr_pairs[f"{kind}_weights"].extend(weights.ravel().tolist())

    tree_attribute_pairs.original = original  # type: ignore[attr-defined]
    random_forest.add_tree_to_attribute_pairs = tree_attribute_pairs


class ResolvedOptions(dict[int, dict[str, Any]]):
    """Conversion options keyed by the id of a model that is not a pipeline: what skl2onnx's
    ``_process_options`` returns unchanged (it rewrites string keys, and options keyed by a
    sub-pipeline). It finds that out by reading every public attribute of every sub-model,
    twice per conversion: for a forest that draws every tree's bootstrap sample again and sums
    its feature importances (~0.15 s a pass for 151 fully grown trees here).
    :func:`_register_resolved_options` lets these options through as they are."""


@cache
def _register_resolved_options() -> None:
    from skl2onnx import _parse, convert

    original = convert._process_options
    if getattr(original, "__name__", "") == "process_options":
        return

    def process_options(model: Any, options: Any) -> Any:
        if isinstance(options, ResolvedOptions):
            return options
        return original(model, options)

    process_options.original = original  # type: ignore[attr-defined]
    convert._process_options = process_options
    _parse._process_options = process_options


def register_converters() -> None:
    """What :func:`to_onnx` needs registered with skl2onnx (CatBoost's converter and the faster
    forest and options paths); idempotent."""
    _register_catboost()
    _register_fast_trees()
    _register_resolved_options()


def to_onnx(
    pipeline: Pipeline, features: Sequence[Feature], task: Task, image: ImageSpec | None = None
) -> onnx.ModelProto:
    """Convert with one typed input per feature column, named exactly like the column (or, for
    image models, one ``pixels`` input of shape (n, n_pixels))."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    register_converters()
    options: dict[int, dict[str, Any]] | None = None
    if task is Task.classification:
        final = pipeline.steps[-1][1]
        options = (dict if isinstance(final, Pipeline) else ResolvedOptions)({id(final): {"zipmap": False}})
    if image is not None:
        image_model = convert_sklearn(
            pipeline,
            initial_types=[(INPUT_NAME, FloatTensorType([None, image.n_pixels]))],
            options=options,
            target_opset=TARGET_OPSET,
        )
        drop_default_tree_attributes(image_model)
        return image_model
    initial_types = [
        (
            f.name,
            FloatTensorType([None, 1]) if f.kind is FeatureKind.numeric else StringTensorType([None, 1]),
        )
        for f in features
    ]
    model = convert_sklearn(
        pipeline, initial_types=initial_types, options=options, target_opset=TARGET_OPSET
    )
    drop_default_tree_attributes(model)
    # skl2onnx sanitises input names ("mean radius" -> "mean_radius"); restore the real ones.
    renames = {inp.name: f.name for inp, f in zip(model.graph.input, features, strict=True)}
    for inp in model.graph.input:
        inp.name = renames[inp.name]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    return model


# Optional tree-ensemble attributes that converters write out in full even when every entry is
# the operator's default (hit rates are unused by ONNX Runtime). One entry per tree node: for a
# 150-tree forest they are ~20% of the file and of the parsing time of a cold start.
TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")
TREE_DEFAULTS: dict[str, float] = {"nodes_hitrates": 1.0, "nodes_missing_value_tracks_true": 0}


def drop_default_tree_attributes(model: onnx.ModelProto) -> None:
    """Remove per-node tree attributes whose every value is the operator default."""
    for node in model.graph.node:
        if node.domain != "ai.onnx.ml" or node.op_type not in TREE_OPS:
            continue
        keep = []
        for attr in node.attribute:
            default = TREE_DEFAULTS.get(attr.name)
            values = attr.floats if attr.type == onnx.AttributeProto.FLOATS else attr.ints
            if default is not None and all(v == default for v in values):
                continue
            keep.append(attr)
        if len(keep) != len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(keep)


def provenance(
    *,
    model: str,
    experiment_id: int,
    model_class: str,
    task: Task,
    target: str,
    features: Sequence[Feature],
    classes: list[Any],
    hyperparameters: dict[str, Any],
    metrics: dict[str, float],
    extra: dict[str, Any] | None = None,
    commit: str | None = None,
) -> dict[str, str]:
    meta: dict[str, Any] = {
        "commit": commit or code_commit(),
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "experiment_name": f"{model}:{model_class}:{experiment_id}",
        "experiment_id": str(experiment_id),
        "model": model,
        "model_class": model_class,
        "task": task.value,
        "target": target,
        "features": json.dumps([f.model_dump(mode="json") for f in features]),
        "classes": json.dumps(classes),
        "hyperparameters": json.dumps(hyperparameters),
        "metrics": json.dumps(metrics),
    }
    for key, value in (extra or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    return meta


def with_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> bytes:
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    model.producer_name = "mlfn"
    return model.SerializeToString()


def check_parity(
    pipeline: Pipeline,
    onnx_model: OnnxModel,
    frame: pd.DataFrame,
    feeds: dict[str, np.ndarray],
    task: Task,
) -> dict[str, float]:
    """Raise :class:`ParityError` unless ONNX reproduces the native model on ``frame``, which
    ``feeds`` holds as the serving runtime feeds it.

    Returns the observed worst-case differences, which are recorded with the model.
    """
    sample = frame.iloc[:PARITY_SAMPLE]
    outputs = onnx_model.run({k: v[:PARITY_SAMPLE] for k, v in feeds.items()})
    if task is Task.regression:
        native = np.asarray(pipeline.predict(sample), dtype=np.float64).reshape(-1)
        exported = np.asarray(outputs[0], dtype=np.float64).reshape(-1)
        diff = np.abs(native - exported)
        allowed = REGRESSION_RTOL * np.maximum(1.0, np.abs(native))
        bad = np.flatnonzero(diff > allowed)
        if bad.size:
            i = int(bad[0])
            raise ParityError(
                f"{bad.size} of {len(sample)} holdout predictions differ beyond tolerance "
                f"(row {i}: native {native[i]!r}, onnx {exported[i]!r}, "
                f"tolerance {REGRESSION_RTOL} relative)"
            )
        return {"max_abs_diff": float(diff.max(initial=0.0))}
    # The rule checked: the label of a row is the most probable class of the native model, both
    # as the graph's label output says and as serving answers it (the argmax of the graph's
    # probabilities); a row whose two most probable native classes are within 2 * PROBA_ATOL may
    # go either way. pipeline.predict is not consulted: for some estimators (SVC(probability=True))
    # it follows the decision function rather than the probabilities.
    native_proba = np.asarray(pipeline.predict_proba(sample), dtype=np.float64)
    graph_labels = np.asarray(outputs[0]).reshape(-1).astype(np.int64)
    proba = np.asarray(outputs[1], dtype=np.float64)
    if proba.shape != native_proba.shape:
        raise ParityError(f"probability shape {proba.shape} != native {native_proba.shape}")
    pdiff = np.abs(proba - native_proba)
    worst = float(pdiff.max(initial=0.0))
    if worst > PROBA_ATOL:
        i = int(np.unravel_index(np.argmax(pdiff), pdiff.shape)[0])
        raise ParityError(
            f"probabilities differ by {worst:.3g} (> {PROBA_ATOL}) at holdout row {i}"
        )
    expected = native_proba.argmax(axis=1)
    top2 = np.sort(native_proba, axis=1)[:, -2:]
    tied = top2[:, -1] - top2[:, 0] <= 2 * PROBA_ATOL
    mismatched = np.zeros(len(expected), dtype=bool)
    for what, labels in (("label output", graph_labels), ("most probable class", proba.argmax(axis=1))):
        wrong = labels != expected
        bad = np.flatnonzero(wrong & ~tied)
        if bad.size:
            i = int(bad[0])
            raise ParityError(
                f"{bad.size} of {len(sample)} holdout rows: the onnx {what} differs from the native "
                f"model's most probable class and the probabilities are not tied (row {i}: onnx "
                f"class index {int(labels[i])}, native {int(expected[i])})"
            )
        mismatched |= wrong
    return {"max_proba_diff": worst, "label_ties": float(mismatched.sum())}
