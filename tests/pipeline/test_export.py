"""``rmat export``: real ZeRO 0, 2 and 3 trainings exported, read back by ``RMAT.from_pretrained`` alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from model import RMAT
from model.pretrained import ExportedFolderError
from model.tokenizer import load_exported
from pipeline.export import export_run
from pipeline.inference import Sampling, stream_text
from pipeline.serving import log_exported_model
from pipeline.train.tracking import saved_run_id, tracking_uri
from tests.pipeline.conftest import REPO, TINY, rmat

HELPER = os.path.join(REPO, "tests", "pipeline", "engine_weights.py")
STEPS = 3


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def train_and_record(run_dir: str, shards: str, zero_stage: int) -> dict:
    """A real 2-process training of STEPS steps; returns what its engine held at the end."""
    record = os.path.join(run_dir, "engine.pt")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
               HELPER, TINY, record, f"data.shards={shards}", f"run_dir={run_dir}", "engine.threads_per_proc=1",
               f"engine.zero_stage={zero_stage}", f"steps={STEPS}", "eval.max_docs=4"]
    # Its own session: a timeout ends torchrun's ranks too, not only torchrun.
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _, err = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode == 0, err[-3000:]
    return torch.load(record)


@pytest.fixture(scope="module")
def trainings(shards, tmp_path_factory):
    """Each ZeRO stage trained once for the whole module: {stage: (run folder, engine record)}."""
    done = {}

    def get(stage: int) -> tuple[str, dict]:
        if stage not in done:
            run_dir = str(tmp_path_factory.mktemp(f"zero{stage}") / "run")
            done[stage] = run_dir, train_and_record(run_dir, shards, stage)
        return done[stage]

    return get


@pytest.fixture(scope="module", params=[0, 2, 3], ids=["zero0", "zero2", "zero3"])
def exported(request, trainings):
    """(run folder, engine record, exported folder) of one ZeRO stage."""
    run_dir, record = trainings(request.param)
    folder = os.path.join(os.path.dirname(run_dir), "export")
    export_run(run_dir, folder)
    return run_dir, record, folder


@pytest.fixture(scope="module")
def zero2(trainings):
    """A ZeRO-2 run and an export of it with the ONNX graphs: what generation, errors and metadata work on."""
    run_dir, _ = trainings(2)
    folder = os.path.join(os.path.dirname(run_dir), "export-onnx")
    export_run(run_dir, folder, formats=("safetensors", "onnx"))
    return run_dir, folder


def test_exported_weights_equal_the_engines_fp32_weights_bit_for_bit(exported):
    _, record, folder = exported
    state = RMAT.from_pretrained(folder).state_dict()
    assert set(record["weights"]) <= set(state)
    assert all(torch.equal(state[name], w) for name, w in record["weights"].items())


def test_from_pretrained_gives_the_engines_logits_and_memory(exported):
    _, record, folder = exported
    model = RMAT.from_pretrained(folder)
    with torch.no_grad():
        logits, state = model(record["tokens"], model.init_state(1))
    # ZeRO-3's own forward may differ from a plain module's in the last bits (docs: deepspeed-on-cpu).
    torch.testing.assert_close(logits, record["logits"], rtol=0, atol=1e-5)
    torch.testing.assert_close(state.carry, record["carry"], rtol=0, atol=1e-5)


def test_tied_embeddings_are_written_once_and_tied_again_on_load(zero2):
    from safetensors import safe_open

    _, folder = zero2
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert "tok_emb.weight" in names and "lm_head.weight" not in names
    model = RMAT.from_pretrained(folder)
    assert model.lm_head.weight.data_ptr() == model.tok_emb.weight.data_ptr()


def test_export_json_names_the_source_and_hashes_every_file(zero2):
    run_dir, folder = zero2
    info = json.loads(Path(folder, "export.json").read_text())
    assert info["checkpoint"] == f"step_{STEPS:08d}" and info["source_run"] == os.path.abspath(run_dir)
    assert info["mlflow_run_id"] == saved_run_id(run_dir) and len(info["git_commit"]) == 40
    assert len(info["data_manifest_sha256"]) == 64
    assert sorted(info["sha256"]) == sorted(set(os.listdir(folder)) - {"export.json"})
    assert not [n for n in os.listdir(folder) if n.endswith((".pt", ".pkl", ".bin"))]


def test_tokenizer_of_the_export_gives_the_datas_ids(zero2):
    tokenizer = load_exported(zero2[1])
    assert (tokenizer.kind, tokenizer.bos_id, tokenizer.eos_id) == ("bytes", 256, 257)
    assert tokenizer.decode(tokenizer.encode("def f(x): → ok")) == "def f(x): → ok"


def test_from_pretrained_needs_no_deepspeed(zero2):
    code = ("import sys; from model import RMAT; m = RMAT.from_pretrained(sys.argv[1]); "
            "assert not any(n.split('.')[0] == 'deepspeed' for n in sys.modules), 'deepspeed imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code, zero2[1]], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_bf16_export_gives_logits_within_stated_tolerance(zero2, tmp_path):
    run_dir, folder = zero2
    export_run(run_dir, str(tmp_path / "bf16"), dtype="bf16")
    tokens = torch.arange(32)[None]
    full, half = RMAT.from_pretrained(folder), RMAT.from_pretrained(str(tmp_path / "bf16"))
    with torch.no_grad():
        a, _ = full(tokens, full.init_state(1))
        b, _ = half(tokens, half.init_state(1))
    assert os.path.getsize(tmp_path / "bf16" / "model.safetensors") < 0.6 * os.path.getsize(
        os.path.join(folder, "model.safetensors"))
    assert (a - b).abs().max() < 0.05  # bf16 keeps 8 bits of mantissa: ~0.4% per weight (README)


def test_generate_streams_the_same_greedy_text_with_both_backends(zero2, tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(Path(TINY).read_text() * 2)  # ~1 kB: about 30 segments of 32 tokens
    texts = []
    for backend in ("torch", "onnx"):
        code, out = rmat("generate", zero2[1], "--prompt-file", str(prompt), "--max-new-tokens", "24",
                         "--backend", backend)
        assert code == 0
        texts.append(out)
        assert re.fullmatch(rf"\d+ tokens, [\d.]+ tokens/s \({backend}\)", capsys.readouterr().err.strip())
    assert texts[0] == texts[1] and texts[0] != "\n"  # a 3-step model may well continue with spaces


def copy_export(folder: str, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def test_a_changed_file_is_refused_by_name(zero2, tmp_path):
    target = copy_export(zero2[1], tmp_path)
    with open(target / "config.json", "a") as f:
        f.write(" ")
    with pytest.raises(ExportedFolderError, match=r"config\.json: sha256 does not match"):
        RMAT.from_pretrained(str(target))


def test_generate_refuses_a_truncated_model_file_in_one_line(zero2, tmp_path, capsys):
    target = copy_export(zero2[1], tmp_path)
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, _ = rmat("generate", str(target), "--prompt", "x")
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "model.safetensors: sha256 does not match" in err


def test_generate_refuses_a_folder_without_tokenizer(zero2, tmp_path, capsys):
    target = copy_export(zero2[1], tmp_path)
    os.remove(target / "tokenizer.json")
    code, _ = rmat("generate", str(target), "--prompt", "x")
    assert code == 1 and "tokenizer.json: listed in export.json but missing" in capsys.readouterr().err


def test_export_of_a_run_without_checkpoint_fails_in_one_line(tmp_path, capsys):
    code, _ = rmat("export", str(tmp_path), "--out", str(tmp_path / "out"))
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "checkpoints/latest: missing" in err
    assert not os.path.exists(tmp_path / "out")


def test_export_of_a_checkpoint_missing_a_ranks_file_names_it(zero2, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(zero2[0], run_dir, ignore=shutil.ignore_patterns("mlflow*"))
    os.remove(run_dir / "checkpoints" / f"step_{STEPS:08d}" / "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    code, _ = rmat("export", str(run_dir), "--out", str(tmp_path / "out"))
    err = capsys.readouterr().err.strip()
    assert code == 1 and "zero_pp_rank_1_mp_rank_00_optim_states.pt: missing" in err
    assert not os.path.exists(tmp_path / "out") and not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_export_never_overwrites_an_existing_folder(zero2, capsys):
    code, _ = rmat("export", zero2[0], "--out", zero2[1])
    assert code == 1 and "already exists" in capsys.readouterr().err
    assert RMAT.from_pretrained(zero2[1]) is not None


def test_logging_the_model_leaves_no_tracking_uri_for_later_processes(zero2, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    log_exported_model(zero2[1], zero2[0])
    assert "MLFLOW_TRACKING_URI" not in os.environ  # a training started next logs to its own store


def test_mlflow_serves_the_logged_model_over_http_carrying_memory_between_calls(zero2, tmp_path):
    run_dir, folder = zero2
    uri = log_exported_model(folder, run_dir)
    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 (the server writes it until the end)
    # The server execs `uvicorn` from PATH: this interpreter's own scripts folder comes first.
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri("", run_dir),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager",
                               "local", "-h", "127.0.0.1", "-p", port, "-w", "1"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", server, tmp_path / "serve.log")
        first = ask(port, "def main(", "s1")
        second = ask(port, "x", "s1")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert first == greedy_text(folder, "def main(")
    # The second call went on from the memory the first left: as if it had read everything at once.
    assert second == greedy_text(folder, "def main(" + first + "x")


def greedy_text(folder: str, prompt: str) -> str:
    parts = []
    stream_text(folder, prompt, Sampling(max_new_tokens=8), "onnx", parts.append)
    return "".join(parts)


def wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout} s: {log.read_text()[-3000:]}")


def ask(port: str, prompt: str, session: str) -> str:
    body = json.dumps({"dataframe_split": {"columns": ["prompt", "session"], "data": [[prompt, session]]},
                       "params": {"max_new_tokens": 8}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        predictions = json.loads(response.read())["predictions"]
    assert len(predictions) == 1
    return predictions[0]
