"""examples/pytorch/train_ctr.py runs: one process against torch's own
EmbeddingBag on the same stream, 2 gloo ranks with compressed gradients,
and a checkpointed run resumed."""
import os
import re
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "pytorch",
                      "train_ctr.py")


def train(*args):
    out = subprocess.run([sys.executable, SCRIPT, "--held-out", "40000", *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"RESULT auc=([\d.]+) logloss=([\d.]+) examples_per_s=(\d+)", out.stdout)
    assert m, out.stdout
    return float(m[1]), float(m[2]), out.stdout


def test_one_process_matches_torch():
    auc, ll, _ = train("--examples", "200000")
    base_auc, base_ll, _ = train("--examples", "200000", "--baseline")
    assert auc > 0.80 and abs(auc - base_auc) < 0.01 and abs(ll - base_ll) < 0.01


def test_two_ranks_int8_topk_checkpoint_resume(tmp_path):
    store = str(tmp_path / "s")
    auc, _, out = train("--world-size", "2", "--examples", "120000", "--codec", "int8",
                        "--topk", "0.5", "--store", store, "--checkpoint-every", "40")
    m = re.search(r"\(([\d.]+)x fp32 rows\)", out)
    assert m and float(m[1]) < 0.25, out
    auc2, _, out2 = train("--world-size", "2", "--examples", "200000", "--codec", "int8",
                          "--topk", "0.5", "--store", store, "--checkpoint-every", "40",
                          "--resume")
    assert "resumed at step 80" in out2, out2
    assert auc2 > 0.80
