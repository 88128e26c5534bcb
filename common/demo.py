"""Demo models, trained and deployed on a fresh store from data that ships with scikit-learn.

Between them they cover every model class, both tasks, binary and multiclass, categorical
features and an image model (scikit-learn's 8x8 digits).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.lifecycle import Lifecycle

log = logging.getLogger("mlfn.demo")


@dataclass(frozen=True)
class DemoModel:
    name: str
    task: str
    target: str
    model_class: str
    hyperparameters: dict[str, Any]
    load: Callable[[], Any]
    image: dict[str, Any] | None = None  # create_model fields of an image model


def breast_cancer() -> Any:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.data.copy()
    frame["diagnosis"] = [str(data.target_names[i]) for i in data.target]
    return frame


def iris() -> Any:
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.data.copy()
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    frame["species"] = [str(data.target_names[i]) for i in data.target]
    return frame


def diabetes() -> Any:
    """Disease progression after one year; ``sex`` is categorical (coded 1 and 2 in the study)."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(as_frame=True, scaled=False)
    frame = data.data.copy()
    frame["sex"] = frame["sex"].astype(int).astype(str)
    frame["progression"] = data.target
    return frame


def wine() -> Any:
    """Wine cultivar from chemistry, plus two banded (categorical) measurements."""
    import pandas as pd
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    columns = ["alcohol", "malic_acid", "flavanoids", "proline", "od280/od315_of_diluted_wines"]
    frame = data.data[columns].copy()
    frame.columns = ["alcohol", "malic_acid", "flavanoids", "proline", "od280_od315"]
    frame["colour"] = pd.cut(data.data["color_intensity"], [0, 3.5, 6.0, 100],
                             labels=["pale", "medium", "deep"]).astype(str)
    frame["hue"] = pd.cut(data.data["hue"], [0, 0.8, 1.05, 10],
                          labels=["brown", "amber", "red"]).astype(str)
    frame["cultivar"] = [f"cultivar_{i}" for i in data.target]
    return frame


def digits_png(index: int) -> bytes:
    """One of scikit-learn's 8x8 digit images (values 0-16) as a grayscale PNG."""
    import io

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = load_digits().images[index]
    out = io.BytesIO()
    Image.fromarray(np.round(pixels / 16.0 * 255.0).astype(np.uint8), mode="L").save(out, format="PNG")
    return out.getvalue()


def digits_archive(indices: Any = None) -> bytes:
    """A zip of digit PNGs in folders named by label (7/img_0007.png), as users upload them."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(len(data.target)) if indices is None else indices:
            png = io.BytesIO()
            image = np.round(data.images[i] / 16.0 * 255.0).astype(np.uint8)
            Image.fromarray(image, mode="L").save(png, format="PNG")
            archive.writestr(f"{data.target[i]}/img_{i:04d}.png", png.getvalue())
    return buf.getvalue()


DEMOS = (
    DemoModel("breast-cancer", "classification", "diagnosis", "random_forest",
              {"n_estimators": 101}, breast_cancer),
    DemoModel("iris", "classification", "species", "svm", {}, iris),
    DemoModel("diabetes", "regression", "progression", "catboost",
              {"iterations": 200, "depth": 4}, diabetes),
    DemoModel("wine", "classification", "cultivar", "logistic_regression", {}, wine),
    # Trained on the first 1500 images: `mlfn sample-images` writes from the rest, unseen.
    DemoModel("digits", "classification", "label", "svm", {}, lambda: digits_archive(range(1500)),
              image={"input": "image", "image_size": 8, "color": "grayscale"}),
)


def ensure_demo_models(lifecycle: Lifecycle) -> list[str]:
    """Train and deploy the demo models if the store has no model at all."""
    if lifecycle.store.list_models():
        return []
    created = []
    for demo in DEMOS:
        lifecycle.create_model({"name": demo.name, "task": demo.task, "target": demo.target,
                                **(demo.image or {})})
        if demo.image:
            lifecycle.add_images(demo.name, demo.load())
        else:
            lifecycle.add_frame(demo.name, demo.load())
        done = lifecycle.train_now(demo.name, {"model_class": demo.model_class, "deploy": "always",
                                               "hyperparameters": demo.hyperparameters})
        if done.status.value != "succeeded":
            raise RuntimeError(f"demo model {demo.name} failed to train: {done.error}")
        log.info("demo model %s deployed (experiment %s)", demo.name, done.id)
        created.append(demo.name)
    return created
