"""Feedback fine-tuning on Omniglot (28x28): does feedback fix the reported mistakes without
hurting held-out accuracy?  python bench/bench_feedback_finetune.py 300 2e-4 2.0 [OUT_DIR]
(args: fine-tuning steps, learning rate, feedback weight). Prints its results; the figures in
docs/benchmarks.md come from its run of 2026-11-22 (not yet wired to write JSON)."""
import io, json, time, sys, tempfile
from pathlib import Path
import numpy as np, torch
from PIL import Image
torch.set_num_threads(2)
from siamkit.data.omniglot import load_omniglot
from siamkit.training import TrainConfig, fit
from siamkit.io import save_model, load_model
from siamkit.calibration import Calibrator
from siamkit.training.finetune import finetune, FinetuneConfig, FinetuneRefused
from siamkit.inference import embed_all, pair_distances_of_embeddings
from siamkit.tuples import random_pairs
from siamkit.feedback import FeedbackStore
def pair_distances(n, x, i, j):
    """The network's distance of the index pairs (i, j) of the set x (each image embedded once)."""
    return pair_distances_of_embeddings(n, embed_all(n, x), i, j).double().numpy()
OUT = Path(sys.argv[4]) if len(sys.argv) > 4 else Path(tempfile.mkdtemp(prefix="siamkit-ft-")); t0 = time.time()
ds = load_omniglot(str(Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"), split="background", image_size=28)
ev = load_omniglot(str(Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"), split="evaluation", image_size=28)
print("loaded", time.time()-t0, ds.images.shape, ev.images.shape, flush=True)
g = torch.Generator().manual_seed(0)
perm = torch.randperm(len(ds.classes), generator=g)
train_c, cal_c = perm[:400], perm[400:500]
mtr = torch.isin(ds.labels, train_c); mcal = torch.isin(ds.labels, cal_c)
xtr, ytr = ds.images[mtr], ds.labels[mtr]
model_dir = OUT / "base"
if not (model_dir / "config.json").exists():
    cfg = TrainConfig(precision="fp32", encoder="conv4", embedding_dim=64, loss="triplet", epochs=4, batch_size=64, m_per_class=4, val_fraction=0.0, patience=None, progress=False, lr=1e-3, seed=0)
    res = fit(xtr, ytr, cfg)
    save_model(res.network, model_dir)
    print("trained", time.time()-t0, flush=True)
net = load_model(model_dir)
ci, cj, cs = random_pairs(ds.labels[mcal], 4000, torch.Generator().manual_seed(1))
xc = ds.images[mcal]
cal = Calibrator().fit(pair_distances(net, xc, ci, cj), cs.numpy(), split_name="cal", model_fingerprint=net.fingerprint)
cal.save(model_dir)
# deployment: evaluation alphabets; split characters into "reported" and "fresh"
ep = torch.randperm(len(ev.classes), generator=g)
rep_c, fresh_c = ep[:300], ep[300:]
mr = torch.isin(ev.labels, rep_c); mf = torch.isin(ev.labels, fresh_c)
xr, yr = ev.images[mr], ev.labels[mr]
ri, rj, rs = random_pairs(yr, 6000, torch.Generator().manual_seed(2))
d = pair_distances(net, xr, ri, rj); wrong = cal.decide(d) != rs.numpy()
print("deployment pairs", len(rs), "mistakes", int(wrong.sum()), "error rate", float(wrong.mean()), flush=True)
mist = np.nonzero(wrong)[0][:300]
def png(t):
    b = io.BytesIO(); Image.fromarray(t[0].numpy(), "L").save(b, "PNG"); return b.getvalue()
TAG = "-".join(sys.argv[1:]) or "default"
fbdb = OUT / f"feedback-{TAG}.sqlite"; fbdb.unlink(missing_ok=True)
with FeedbackStore.open(fbdb) as st:
    for k in mist:
        a, b = xr[ri[k]], xr[rj[k]]
        st.add(actor="bench", kind="verify", image_a=(png(a), "png"), image_b=(png(b), "png"), predicted={"same": bool(not rs[k])}, truth={"same": bool(rs[k])})
fi, fj, fs = random_pairs(ev.labels[mf], 4000, torch.Generator().manual_seed(3))
xf = ev.images[mf]
def fresh_acc(n, c):
    return float((c.decide(pair_distances(n, xf, fi, fj)) == fs.numpy()).mean())
old_fresh = fresh_acc(net, cal)
import shutil; shutil.rmtree(OUT / f"new-{TAG}", ignore_errors=True)
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
try:
    rep = finetune(model_dir, fbdb, OUT / f"new-{TAG}", replay_images=xtr, replay_labels=ytr, config=FinetuneConfig(steps=steps, lr=float(sys.argv[2]) if len(sys.argv) > 2 else 5e-5, feedback_weight=float(sys.argv[3]) if len(sys.argv) > 3 else 1.0))
    accepted = True
except FinetuneRefused as e:
    rep = e.report; accepted = False
new_fresh = fresh_acc(load_model(OUT / f"new-{TAG}"), Calibrator.load(OUT / f"new-{TAG}")) if accepted else None
summary = {"accepted": accepted, "mistakes_reported": int(len(mist)), "feedback_right_old_new": rep["feedback_pairs_right"],
           "fixed": rep["feedback_pairs_fixed"], "broken": rep["feedback_pairs_broken"], "held_out": rep["held_out"],
           "fresh_deployment_accuracy_old_new": [old_fresh, new_fresh], "finetune_seconds": rep["seconds"], "total_seconds": time.time()-t0}
print(json.dumps(summary, indent=1))
(OUT / f"summary-{TAG}.json").write_text(json.dumps(summary, indent=1))
