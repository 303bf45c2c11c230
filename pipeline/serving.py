"""The exported model as an MLflow model: the ONNX graphs plus a pyfunc that carries the memory and returns text.

``log_exported_model`` logs an export folder (with its ONNX graphs) into the training's
own MLflow run as the model ``model``; ``mlflow models serve -m runs:/<id>/model
--env-manager local`` then answers ``/invocations`` with a DataFrame of ``prompt`` (and
optionally ``session``) and returns one continuation per row. A row whose ``session`` was
seen before continues from the memory that session left: the recurrent state stays in
the server between calls, never in the request.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import mlflow
import numpy as np
import pandas as pd
import torch

from model.rmat import sample
from model.tokenizer import load_exported
from pipeline.inference import OnnxDecoder, prompt_ids
from pipeline.train.tracking import saved_run_id, tracking_uri

ARTIFACT = "export"
MODEL_NAME = "model"
PARAMS = {"max_new_tokens": 32, "temperature": 0.0, "top_k": 0, "seed": 0}


class MemoryCarryingModel(mlflow.pyfunc.PythonModel):
    """Continues each row's ``prompt``; rows that share a ``session`` share one memory across calls."""

    def load_context(self, context) -> None:
        folder = context.artifacts[ARTIFACT]
        self.tokenizer = load_exported(folder)
        self.decoder = OnnxDecoder(folder)
        self.sessions: dict[str, dict] = {}

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        p = {**PARAMS, **(params or {})}
        torch.manual_seed(int(p["seed"]))
        sessions = model_input["session"] if "session" in model_input else [""] * len(model_input)
        return [self.continue_text(str(prompt), str(session), p)
                for prompt, session in zip(model_input["prompt"], sessions, strict=True)]

    def continue_text(self, prompt: str, session: str, p: dict) -> str:
        """The continuation of ``prompt``; a known non-empty ``session`` goes on from its memory."""
        saved = self.sessions.get(session) if session else None
        if saved is None:
            self.decoder.reset(1)
            logits = self.decoder.extend(np.asarray([prompt_ids(self.tokenizer, prompt)], np.int64))
        else:
            self.decoder.state = dict(saved["state"])
            ids = self.tokenizer.encode(prompt)
            logits = self.decoder.extend(np.asarray([ids], np.int64)) if ids else saved["logits"]
        new = []
        for _ in range(int(p["max_new_tokens"])):
            token = int(sample(torch.from_numpy(logits), float(p["temperature"]), int(p["top_k"]) or None)[0])
            new.append(token)
            logits = self.decoder.step(np.asarray([token], np.int64))  # the state holds every token shown
            if token == self.tokenizer.eos_id:
                break
        if session:
            self.sessions[session] = {"state": dict(self.decoder.state), "logits": logits}
        return self.tokenizer.decode(new)


def log_exported_model(folder: str, run_dir: str, configured_uri: str = "") -> str:
    """Log ``folder`` (an export with ONNX graphs) into the MLflow run of ``run_dir``; returns the model URI."""
    from mlflow.models import infer_signature

    run_id = saved_run_id(run_dir)
    if run_id is None:
        raise FileNotFoundError(f"{run_dir}/mlflow_run_id: missing; the training never reached MLflow")
    if not os.path.isfile(os.path.join(folder, "segment.onnx")):
        raise FileNotFoundError(f"{folder}/segment.onnx: missing; export with --format safetensors,onnx")
    example = pd.DataFrame({"prompt": ["def main():"], "session": [""]})
    signature = infer_signature(example, ["text"], params=PARAMS)
    with _tracking_at(tracking_uri(configured_uri, run_dir)), mlflow.start_run(run_id=run_id):
        mlflow.pyfunc.log_model(name=MODEL_NAME, python_model=MemoryCarryingModel(), artifacts={ARTIFACT: folder},
                                signature=signature,
                                # Named, not inferred: inference would import and time the whole environment.
                                pip_requirements=["onnxruntime", "numpy", "pandas", "torch", "sentencepiece"])
    return f"runs:/{run_id}/{MODEL_NAME}"


@contextlib.contextmanager
def _tracking_at(uri: str) -> Iterator[None]:
    """MLflow's fluent API pointed at ``uri`` for one block, then back as it was.

    ``mlflow.set_tracking_uri`` also exports $MLFLOW_TRACKING_URI, which every process
    started later would inherit: a training launched next would log into this run's store.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets the variable again
