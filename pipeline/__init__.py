"""The reproducible training pipeline (DVC): extract_data -> train_model -> inference_model."""
