"""The toy reproduction script end to end, at smoke-test size (the real run is the README's main job)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_toy_addition_script_writes_figures_and_numbers(tmp_path):
    subprocess.run([sys.executable, "experiments/toy_addition.py", "--out", str(tmp_path), "--pretrain-steps", "40",
                    "--posttrain-steps", "10", "--no-progress"], check=True, cwd=REPO, capture_output=True)
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0 <= results["dense_exact_match"] <= 1 and 0 < results["edge_density"] <= 1
    assert results["posttrain_steps"] == 10
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64") >= 4
    for name in ("attention_graphs.png", "training_dynamics.png", "attention_maps.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_compose_flax_example_runs():
    out = subprocess.run([sys.executable, "experiments/compose_flax.py", "--steps", "3"], check=True, cwd=REPO,
                         capture_output=True, text=True).stdout
    assert "final: eval-mode expected density" in out


def test_zoo_table_worst_case_and_best_model_rows():
    """The zoo table's worst case over dense models and the goal count, for the final models and for best_model/
    (a run that never met tau has none: it counts as missing the goal)."""
    sys.path.insert(0, str(REPO / "experiments"))
    import controllers

    run = lambda d, c, em, best=None: {"final_density": d, "final_ce_minus_tau": c, "final_greedy_exact_match": em,
                                       **({"best_model": best} if best else {})}
    zoo = {"a": {"x/seed1": run(0.02, -0.01, 1.0, {"step": 900, "density": 0.015, "ce_minus_tau": -0.002,
                                                   "greedy_exact_match": 0.995})},
           "b": {"x/seed1": run(0.03, 0.004, 0.98)}}
    lines = controllers.zoo_table(zoo).splitlines()
    final, best = lines[2].split(" | "), lines[3].split(" | ")
    assert final[0] == "| x" and final[2:4] == ["2.00% (1.000)", "3.00% (0.980)"]
    assert final[4:] == ["3.00%", "+0.0040", "0.980", "1/2 |"]
    assert best[0] == "| x best_model/" and best[2:4] == ["1.50% (0.995)", "100.00% (0.000)"]
    assert best[4:] == ["100.00%", "+inf", "0.000", "1/2 |"]
    assert len(lines) == 4  # no best_model line for records that predate it
    del zoo["a"]["x/seed1"]["best_model"]
    assert len(controllers.zoo_table(zoo).splitlines()) == 3


def test_zoo_pools_directories_of_one_dense_model(tmp_path):
    """--zoo merges the records of same-named directories (one dense model over several rounds), refuses a run
    recorded twice, and --pool counts every final run by hand: range, median, goal."""
    sys.path.insert(0, str(REPO / "experiments"))
    import controllers

    run = lambda d, c=-0.001, em=1.0: {"final_density": d, "final_ce_minus_tau": c, "final_greedy_exact_match": em}
    for rnd, res in (("r1", {"x/seed1": run(0.030), "x/seed2": run(0.020)}),
                     ("r2", {"y/seed1": run(0.024, em=0.98), "x/seed3": run(0.050)})):
        (tmp_path / rnd / "m").mkdir(parents=True)
        (tmp_path / rnd / "m" / "results.json").write_text(json.dumps(res))
    zoo = controllers.load_zoo([tmp_path / "r1" / "m", tmp_path / "r2" / "m"])
    assert list(zoo) == ["m"] and sorted(zoo["m"]) == ["x/seed1", "x/seed2", "x/seed3", "y/seed1"]
    assert controllers.pooled(zoo) == ("4 final runs of 2 candidates: density 2.00-5.00%, median 2.70%; "
                                       "goal met on 1 of 4")
    with pytest.raises(SystemExit, match="x/seed1 of m is recorded twice"):
        controllers.load_zoo([tmp_path / "r1" / "m", tmp_path / "r1" / "m"])


def test_controller_summary_and_curve_figure(tmp_path):
    """experiments/controllers.py's numbers from a run's records (by hand), and toy_curves.py's figure."""
    sys.path.insert(0, str(REPO / "experiments"))
    import controllers

    recs = [{"step": 0, "eval_ce": 0.9, "edge_density": 0.8, "edge_density_per_layer": [0.8]},   # the gated start
            {"step": 10, "ce": 0.1, "tau": 0.5},
            {"step": 10, "eval_ce": 0.7, "edge_density": 0.04, "edge_density_per_layer": [0.04]},
            {"step": 20, "eval_ce": 0.3, "edge_density": 0.008, "edge_density_per_layer": [0.008], "final": True}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = controllers.summarise(tmp_path, 0.5)
    assert s["final_density"] == 0.008 and abs(s["final_ce_minus_tau"] + 0.2) < 1e-12
    assert abs(s["worst_excursion"] - 0.2) < 1e-12  # step 10, not the gated start's 0.4
    assert s["steps_to_5pct"] == 10 and s["steps_to_1pct"] == 20 and s["tau"] == 0.5
    # tau measured on training batches: the held-out target is the dense held-out CE (step 0) + slack
    recs[0]["dense_eval_ce"] = 0.25
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = controllers.summarise(tmp_path, 0.5, slack=0.05)
    assert abs(s["final_ce_minus_tau"] - 0.0) < 1e-12 and abs(s["worst_excursion"] - 0.4) < 1e-12
    subprocess.run([sys.executable, "experiments/toy_curves.py", "--out", str(tmp_path / "c.png"), f"{tmp_path}=run"],
                   check=True, cwd=REPO, capture_output=True)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    cmd = [sys.executable, "experiments/toy_curves.py", "--target", "0.3", "--goal", "0.01", "--beta",
           "--out", str(tmp_path / "b.png"), f"{tmp_path}=run"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0 and "logs no multiplier beta" in r.stderr and not (tmp_path / "b.png").exists()
    recs[1]["beta"] = 0.5
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_artifact_of_a_chained_lora_run_rebuilds_its_model(tmp_path):
    """Fine-tune first, then sparsify: a LoRA run that started from another LoRA run's model/ exports both adapter
    sets, and the rebuild (base + the first set, then + the second, with the gate) is the run's own model/: same
    weights and gate, same evaluation."""
    sys.path.insert(0, str(REPO / "experiments"))
    import numpy as np

    import smollm2_artifact
    import sparsejax as sj
    from sparsejax.config import load_config
    from sparsejax.train import RunDir, Trainer

    small = ["train.log_every=5", "train.eval_every=5", "train.checkpoint_every=5", "data.eval_batches=2"]
    dense = tmp_path / "dense"
    Trainer(load_config("toy_addition_pretrain", ["train.steps=10", *small]), dense, progress=False).fit()
    first, second = tmp_path / "finetuned", tmp_path / "sparse"
    Trainer(load_config("toy_addition_pretrain", [f"model.checkpoint={RunDir(dense).model}", "train.lora_rank=4",
                                                  "train.steps=10", "train.lr=0.01", *small]), first,
            progress=False).fit()
    Trainer(load_config("toy_addition_posttrain", [f"model.checkpoint={RunDir(first).model}", "train.lora_rank=4",
                                                   "train.steps=10", "train.lr=0.01", *small]), second,
            progress=False).fit()
    art = smollm2_artifact.export(second, tmp_path / "artifact")
    source = json.loads((art / "source.json").read_text())
    assert [s["file"] for s in source["chain"]] == ["lora_stage0.safetensors", "lora.safetensors"]
    result = smollm2_artifact.rebuild(art, tmp_path / "rebuilt", base_dir=RunDir(dense).model)
    want, got = sj.from_pretrained(RunDir(second).model), sj.from_pretrained(tmp_path / "rebuilt")
    base = sj.from_pretrained(RunDir(dense).model)
    for w, g, b in zip(jax_leaves(want.params), jax_leaves(got.params), jax_leaves(base.params)):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)
    assert max(float(np.abs(w - b).max()) for w, b in zip(jax_leaves(want.params), jax_leaves(base.params))) > 1e-3
    np.testing.assert_array_equal(np.asarray(got.gate.bias), np.asarray(want.gate.bias))
    final = [r for r in RunDir(second).records("eval") if r.step == 10][-1]
    assert abs(result["sparse"]["eval_ce"] - final["eval_ce"]) < 1e-5
    # an artifact without its first stage says which file is missing
    (art / "lora_stage0.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lora_stage0"):
        smollm2_artifact.rebuild(art, tmp_path / "rebuilt2", base_dir=RunDir(dense).model)


def jax_leaves(tree):
    import jax
    import numpy as np

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_toy_failures_counts_each_problem_once_and_splits_the_mean(tmp_path):
    """experiments/toy_failures.py on a random gated toy model: the train / held-out mean answer losses weight back
    to the CE of all 10,000 problems computed by the library's masked cross-entropy; a threshold of 0 counts every
    problem, with 100 problems in each units-digit class; a huge one counts none."""
    sys.path.insert(0, str(REPO / "experiments"))
    import jax
    import jax.numpy as jnp
    import numpy as np
    import toy_failures

    import sparsejax as sj
    from sparsejax.checkpoints import Model
    from sparsejax.checkpoints.hf import save_pretrained
    from sparsejax.config import load_config, model_config
    from sparsejax.data import addition

    config = model_config(load_config("toy_addition_posttrain").model)
    model = Model(config, sj.init_params(config, jax.random.PRNGKey(0)),
                  sj.make_gate(bias=1.0, kind="bernoulli", shape=(config.n_layers, config.n_heads)))
    save_pretrained(model, tmp_path / "m")
    f = toy_failures.failures(str(tmp_path / "m"), threshold=0.0)
    tokens = addition.all_problems()
    m = sj.from_pretrained(tmp_path / "m")
    logits = sj.forward(m.config, m.params, jnp.asarray(tokens[:, :-1]), m.gate)[0]
    ce = float(sj.objective.cross_entropy(logits, jnp.asarray(tokens[:, 1:]), jnp.asarray(addition.answer_mask(10000))))
    np.testing.assert_allclose(0.9 * f["train_ce"] + 0.1 * f["validation_ce"], ce, rtol=1e-4)
    per = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits, -1)), tokens[:, 1:, None], -1)[..., 0]
    per = per[:, addition.PROMPT_LEN - 1:].mean(1)  # each problem's mean answer loss; the 9,000 training ones' worst 180
    held_out = {tuple(r) for r in addition.split("validation").tolist()}
    train = np.array([p for p, r in zip(per, tokens.tolist()) if tuple(r) not in held_out])
    np.testing.assert_allclose(f["train_tail"], np.sort(train)[-180:].mean(), rtol=1e-5)
    assert f["failing"] == 10000 and all(n == 100 for _, n in f["classes"])
    assert sum(n for _, n in f["digit"]) == 10000
    assert toy_failures.failures(str(tmp_path / "m"), threshold=1e9)["failing"] == 0


def test_control_gap_reads_a_run_and_measures_each_against_its_control(tmp_path):
    """experiments/control_gap.py: a run's records from its metrics.jsonl (every evaluation, every 100th training
    record), and each final model's gap to the control beside it or to a named separate control run."""
    sys.path.insert(0, str(REPO / "experiments"))
    import control_gap

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: {seq_len: 8}\n")
    lines = [{"step": 0, "eval_ce": 3.0, "edge_density": 0.8, "edge_density_per_layer": [0.8]},
             *({"step": s, "ce": 2.5, "beta": 0.1, "control_ce": 2.4, "loss": 9.0} for s in range(50, 250, 50)),
             {"step": 200, "eval_ce": 2.70, "edge_density": 0.01, "edge_density_per_layer": [0.01],
              "control_eval_ce": 2.65, "final": True}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    rec = control_gap.records(str(run))
    assert [r["step"] for r in rec["train"]] == [100, 200] and "loss" not in rec["train"][0]
    assert [r["step"] for r in rec["evals"]] == [0, 200] and rec["config"] == {"data": {"seq_len": 8}}
    sep = {"evals": [{"step": 200, "eval_ce": 2.55, "edge_density": 1.0}]}
    plain = {"evals": [{"step": 200, "eval_ce": 2.60, "edge_density": 0.02}]}
    pts = control_gap.points({"in_run": rec, "control": sep, "plain": plain}, against={"plain": "control"})
    assert [(n, round(g, 6)) for n, _, g, _ in pts] == [("in_run", 0.05), ("plain", 0.05)]
    curves = control_gap.gap_curves({"in_run": rec, "plain": plain})  # only evaluations with the control beside
    assert list(curves) == ["in_run"] and [(s, d, round(g, 6)) for s, d, g in curves["in_run"]] == [(200, 0.01, 0.05)]
    assert "final_eval_64_batches" not in rec
    for name, ce, density in (("model", 2.71, 0.011), ("control_model", 2.66, None)):  # `sparsejax eval` outputs
        (run / f"eval64_{name}.json").write_text(json.dumps(
            {"eval_ce": ce, **({"edge_density": density, "edge_density_per_layer": [density]} if density else {})}))
    final = control_gap.records(str(run))["final_eval_64_batches"]
    assert (final["eval_ce"], final["control_eval_ce"], final["edge_density_per_layer"]) == (2.71, 2.66, [0.011])
    records = tmp_path / "records.json"
    records.write_text(json.dumps({"in_run": rec, "plain": plain}, indent=0) + "\n")
    control_gap.main([str(records), "--add", "again", str(run)])  # the file's layout kept: indent 0, final newline
    text = records.read_text()
    assert text == json.dumps({**json.loads(text), "in_run": rec, "plain": plain}, indent=0) + "\n"
    assert list(json.loads(text)) == ["in_run", "plain", "again"]
    control_gap.main([str(records), "--runs", "in_run", "--curves", str(tmp_path / "c.png"), "--title", "toy"])
    assert (tmp_path / "c.png").stat().st_size > 0
    with pytest.raises(SystemExit):  # a record that is not there: an error naming those it has
        control_gap.main([str(records), "--runs", "nope"])
    with pytest.raises(SystemExit):  # curves of runs without a control beside them: an error, not an empty figure
        control_gap.main([str(records), "--runs", "plain", "--curves", str(tmp_path / "d.png")])
    assert not (tmp_path / "d.png").exists()
    # a dense control run separately on the run's schedule: its held-out CE at the steps both evaluated, its
    # 64-batch evaluation the control side of the final one (not the run's own eval64_control_model.json)
    ctrl = tmp_path / "control"
    ctrl.mkdir()
    (ctrl / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"step": 100, "eval_ce": 2.9, "edge_density": 1.0}, {"step": 150, "ce": 2.3},
        {"step": 200, "eval_ce": 2.62, "edge_density": 1.0, "final": True})))
    (ctrl / "eval64_model.json").write_text(json.dumps({"eval_ce": 2.64, "edge_density": 1.0}))
    sep_rec = control_gap.records(str(run), str(ctrl))
    assert [e.get("control_eval_ce") for e in sep_rec["evals"]] == [None, 2.62] and sep_rec["control"] == str(ctrl)
    assert sep_rec["final_eval_64_batches"]["control_eval_ce"] == 2.64
    assert f"{ctrl}/model" in sep_rec["final_eval_64_batches"]["command"]
    control_gap.main([str(records), "--add", "sep", str(run), str(ctrl)])
    assert json.loads(records.read_text())["sep"] == sep_rec
    fresh = tmp_path / "new" / "records.json"  # a records file not there yet: --add starts it, nothing else does
    with pytest.raises(SystemExit):
        control_gap.main([str(fresh), "--runs", "sep"])
    control_gap.main([str(fresh), "--add", "sep", str(run), str(ctrl)])
    assert fresh.read_text() == json.dumps({"sep": sep_rec}, indent=1) + "\n"
    for bad in (["--add", "x"], ["--add", "x", str(run), str(ctrl), "y"]):  # NAME RUN_DIR [CONTROL_DIR] only
        with pytest.raises(SystemExit):
            control_gap.main([str(records), *bad])
    no_evals = tmp_path / "no_evals"  # a control directory without evaluations: an error that names it
    no_evals.mkdir()
    (no_evals / "metrics.jsonl").write_text(json.dumps({"step": 1, "ce": 2.0}))
    with pytest.raises(SystemExit, match="no evaluation"):
        control_gap.records(str(run), str(no_evals))


def test_toy_edges_lists_layer0_edges_with_their_logits_and_exact_cost(tmp_path):
    """experiments/toy_edges.py --logits on a random gated toy model: the listed edges are those the captured
    adjacency keeps on >= 5% of the held-out problems (none of a head whose bias closes it), each at a median gate
    logit > 0, and an edge's answer-CE change equals the one of patching the effective attention (``hook_pattern``)
    to 0 at that edge instead of the gate."""
    sys.path.insert(0, str(REPO / "experiments"))
    import jax
    import jax.numpy as jnp
    import numpy as np
    import toy_edges

    import sparsejax as sj
    from sparsejax.checkpoints import Model
    from sparsejax.checkpoints.hf import save_pretrained
    from sparsejax.config import load_config, model_config
    from sparsejax.data import addition

    config = model_config(load_config("toy_addition_posttrain").model)
    bias = np.zeros((config.n_layers, config.n_heads), np.float32)
    bias[0] = [-0.05, -0.05, -0.05, -1e4]  # random logits are within +-0.12: 23 edges of layer 0 kept on >= 5%
    model = Model(config, sj.init_params(config, jax.random.PRNGKey(1)), sj.Gate(jnp.asarray(bias)))
    save_pretrained(model, tmp_path / "m")
    rows = toy_edges.layer0_edges(str(tmp_path / "m"))
    m = sj.from_pretrained(tmp_path / "m")
    data = addition.split("validation")
    x, y, mask = jnp.asarray(data[:, :-1]), jnp.asarray(data[:, 1:]), jnp.asarray(addition.answer_mask(len(data)))
    logits, aux = sj.forward(m.config, m.params, x, m.gate, mode="eval",
                             capture=["blocks.0.attn.hook_adjacency", "blocks.0.attn.hook_pattern"])
    share = np.asarray(aux["captures"]["blocks.0.attn.hook_adjacency"]).mean(0)
    assert {(r["head"], r["query"], r["key"]) for r in rows} == set(zip(*np.nonzero(share >= 0.05)))
    assert 5 < len(rows) and all(r["head"] != 3 and r["logit"] > 0 for r in rows)
    for r in rows:
        assert r["kept"] == pytest.approx(share[r["head"], r["query"], r["key"]])
    base = float(sj.objective.cross_entropy(logits, y, mask))
    pattern = np.asarray(aux["captures"]["blocks.0.attn.hook_pattern"])
    for r in sorted(rows, key=lambda r: -abs(r["ce_change"]))[:3]:
        closed = pattern.copy()
        closed[:, r["head"], r["query"], r["key"]] = 0.0
        out = sj.forward(m.config, m.params, x, m.gate, mode="eval",
                         interventions={"blocks.0.attn.hook_pattern": jnp.asarray(closed)})[0]
        want = float(sj.objective.cross_entropy(out, y, mask)) - base
        assert abs(want) > 1e-5
        assert r["ce_change"] == pytest.approx(want, rel=1e-3, abs=1e-6)


def test_toy_edges_ties_idle_rope_edges_to_needed_ones():
    """tie_needed on a hand-built layer 0 (2 problems, 1 head): an idle edge whose (head, query token, key token,
    offset) class is kept by a needed edge on one of its two problems is tied on half of them; an idle edge of
    another class is not; the spread within a class is the largest logit difference inside one class."""
    sys.path.insert(0, str(REPO / "experiments"))
    import numpy as np
    import toy_edges

    tokens = np.array([[3, 3, 5, 3], [4, 3, 5, 3]])  # positions 0..3
    kept = np.zeros((2, 1, 4, 4), bool)
    g = np.zeros((2, 1, 4, 4))
    kept[:, 0, 1, 0] = True   # needed: query 1 key 0, classes (3, 3, 1) and (3, 4, 1)
    kept[:, 0, 3, 2] = True   # idle: query 3 key 2, class (3, 5, 1) on both problems: tied to nothing
    kept[:, 0, 3, 1] = True   # idle: query 3 key 1, offset 2, class (3, 3, 2)
    kept[:, 0, 2, 1] = True   # idle: query 2 key 1, class (5, 3, 1): not needed
    g[:, 0, 1, 0] = [1.0, 2.0]
    g[:, 0, 3, 1] = [0.5, 0.25]
    rows = [{"head": 0, "query": 1, "key": 0, "ce_change": 0.3},
            {"head": 0, "query": 3, "key": 2, "ce_change": 0.0},
            {"head": 0, "query": 3, "key": 1, "ce_change": 0.0},
            {"head": 0, "query": 2, "key": 1, "ce_change": 0.0}]
    toy_edges.tie_needed(rows, tokens, kept, g)
    assert [r["tied"] for r in rows] == [1.0, 0.0, 0.0, 0.0]
    assert rows[0]["class_spread"] == 0.25  # (3, 3, 2) at 0.5 and 0.25; the others one value each
    # problem 0's position 2 now a 3, and a needed edge query 2 key 0 (class (3, 3, 2)) kept on problem 0 only (a
    # CE increase or decrease counts alike): query 3 key 1 is (3, 3, 2) on both problems, tied on both; query 3 key 2
    # and query 2 key 1 are (3, 3, 1) on problem 0 (the needed query 1 key 0's class), untied on problem 1
    kept[0, 0, 2, 0] = True
    tokens = np.array([[3, 3, 3, 3], [4, 3, 5, 3]])
    rows.append({"head": 0, "query": 2, "key": 0, "ce_change": -0.2})
    toy_edges.tie_needed(rows, tokens, kept, g)
    assert [r["tied"] for r in rows[1:4]] == [0.5, 1.0, 0.5]


def test_toy_edges_rope_layer0_gate_depends_on_tokens_and_offset_alone(tmp_path):
    """On a random toy model in Llama layout (RoPE, no absolute positions) layer 0's gate logit is the same for every
    edge of one (head, query token, key token, offset) class (spread at float32 rounding) while it differs between
    edges, and each listed edge gets its ``tied`` share."""
    sys.path.insert(0, str(REPO / "experiments"))
    import jax
    import jax.numpy as jnp
    import numpy as np
    import toy_edges

    import sparsejax as sj
    from sparsejax.checkpoints import Model
    from sparsejax.checkpoints.hf import save_pretrained
    from sparsejax.config import load_config, model_config

    config = model_config(load_config("toy_addition_posttrain", ["model.family=llama"]).model)
    bias = np.full((config.n_layers, config.n_heads), -1e4, np.float32)
    bias[0, 0] = 0.0  # one head of layer 0 open where its q . k > 0
    save_pretrained(Model(config, sj.init_params(config, jax.random.PRNGKey(2)), sj.Gate(jnp.asarray(bias))),
                    tmp_path / "m")
    rows = toy_edges.layer0_edges(str(tmp_path / "m"), min_kept=0.5)
    assert len(rows) > 3 and len({round(r["logit"], 4) for r in rows}) > 3
    assert rows[0]["class_spread"] < 1e-5
    assert all(0.0 <= r["tied"] <= 1.0 for r in rows)


def test_region_gap_pairs_batches_and_adds_the_errors_of_disjoint_sets(tmp_path, monkeypatch, capsys):
    """experiments/region_gap.py: the sparse model's gap to its control, batch by batch, on each set; the
    difference of the two sets with its standard error (worked by hand below)."""
    sys.path.insert(0, str(REPO / "experiments"))
    import region_gap

    import sparsejax.config
    import sparsejax.train.evaluate

    ces = {("model", "validation"): [3.0, 3.2, 3.1, 3.3], ("control_model", "validation"): [3.0, 3.1, 3.0, 3.1],
           ("model", "aside"): [2.0, 2.0], ("control_model", "aside"): [2.0, 1.9]}
    monkeypatch.setattr(sparsejax.config, "load_config", lambda path, overrides: {"path": path, "o": overrides})
    monkeypatch.setattr(sparsejax.train.evaluate, "evaluate_checkpoint",
                        lambda cfg, ckpt, split, per_batch: {"eval_ce_per_batch": ces[(Path(ckpt).name, split)]})
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="control_model is missing"):
        region_gap.table([str(run)], 10)
    (run / "control_model").mkdir()
    region_gap.main([str(run), "--json", str(tmp_path / "out.json")])
    (row,) = json.loads((tmp_path / "out.json").read_text())
    # validation gaps 0, .1, .1, .2: mean .1, sd sqrt(.02 / 3), se sd / 2; aside gaps 0, .1: mean .05, se .05
    assert row["validation"]["gap"] == pytest.approx(0.1) and row["validation"]["se"] == pytest.approx(0.0408248, rel=1e-5)
    assert row["aside"]["gap"] == pytest.approx(0.05) and row["aside"]["se"] == pytest.approx(0.05)
    assert row["difference"] == pytest.approx(0.05) and row["difference_se"] == pytest.approx(0.0645497, rel=1e-5)
    assert "+0.1000 ± 0.0408 (4 batches)" in capsys.readouterr().out
    (pair,) = region_gap.table([], 10, [("c.yaml", str(run / "control_model"), str(run / "model"))])  # reversed
    assert pair["validation"]["gap"] == pytest.approx(-0.1) and pair["difference"] == pytest.approx(-0.05)
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        region_gap.table([], 10, [("c.yaml", str(run / "nope"), str(run / "model"))])
    region_gap.main(["--from-json", str(tmp_path / "out.json"), "--labels", "one", "--figure", str(tmp_path / "g.png")])
    assert (tmp_path / "g.png").stat().st_size > 0 and "+0.0500 ± 0.0645" in capsys.readouterr().out
    for bad in (["--from-json", str(tmp_path / "out.json"), str(run)], ["--from-json", str(tmp_path / "out.json"),
                                                                        "--labels", "a", "b"], []):
        with pytest.raises(SystemExit):
            region_gap.main(bad)


def test_toy_lost_groups_the_lost_problems_by_the_digits_they_share(tmp_path):
    """experiments/toy_lost.py: (1) the groups of a hand-made loss (every problem with units 8+2 lost, and one
    other problem) are counted by hand; (2) the per-problem answer CE of a random gated toy model averages to the
    library's held-out answer CE; (3) ``RUN@last`` is the run's newest checkpoint: after a 2-step post-training
    with ``train.final=last`` it is the exported model/, parameter for parameter."""
    sys.path.insert(0, str(REPO / "experiments"))
    import jax
    import jax.numpy as jnp
    import numpy as np
    import toy_lost

    import sparsejax as sj
    from sparsejax import objective
    from sparsejax.checkpoints import Model
    from sparsejax.checkpoints.hf import save_pretrained
    from sparsejax.config import load_config, model_config
    from sparsejax.data import addition

    rows = addition.split("validation")
    pair = (rows[:, 1] == 8) & (rows[:, 4] == 2)
    other = int(np.flatnonzero(~pair)[0])
    ce = np.where(pair, 1.0, 1e-4)
    ce[other] = 0.5
    groups = toy_lost.lost_groups(rows, ce)
    assert groups[0] == ("units 8+2", int(pair.sum()), int(pair.sum()))
    lost = rows[ce > 0.05]
    for pattern, n, total in groups[1:]:  # only tens groups of >= 2 lost problems can follow
        a, c = map(int, pattern.split()[1].split("+"))
        assert pattern.startswith("tens") and n >= 2
        assert n == int(((lost[:, 0] == a) & (lost[:, 3] == c)).sum())
        assert total == int(((rows[:, 0] == a) & (rows[:, 3] == c)).sum())
    assert toy_lost.lost_groups(rows, np.zeros(len(rows))) == []

    config = model_config(load_config("toy_addition_posttrain").model)
    model = Model(config, sj.init_params(config, jax.random.PRNGKey(2)), sj.Gate(jnp.full((4, 4), 0.01)))
    save_pretrained(model, tmp_path / "m")
    got_rows, per, right = toy_lost.per_problem(sj.from_pretrained(tmp_path / "m"))
    x, y = jnp.asarray(rows[:, :-1]), jnp.asarray(rows[:, 1:])
    logits = sj.forward(model.config, model.params, x, model.gate, mode="eval")[0]
    want = float(objective.cross_entropy(logits, y, jnp.asarray(addition.answer_mask(len(rows)))))
    np.testing.assert_array_equal(got_rows, rows)
    assert per.mean() == pytest.approx(want, rel=1e-5) and 0 <= right.mean() <= 1
    # the open share from the logits is the library's deterministic edge density of each layer
    _, aux = sj.forward(model.config, model.params, x, model.gate, mode="eval")
    layers = toy_lost.closed_logits(sj.from_pretrained(tmp_path / "m"))
    np.testing.assert_allclose([r["open"] for r in layers], np.asarray(aux["edge_density"]).mean((1, 2)), atol=1e-6)
    assert all(0 < r["open"] < 1 and r["closed_quantiles"][0.1] <= r["closed_quantiles"][0.9] <= 0 for r in layers)

    from sparsejax.cli import main as cli
    run = tmp_path / "run"
    cli(["pretrain", "toy_addition_pretrain", str(tmp_path / "dense"), "train.steps=2", "model.n_layers=1",
         "model.d_model=16", "model.n_heads=2", "model.d_ff=32", "--no-progress"])
    cli(["posttrain", "toy_addition_posttrain", str(run), f"model.checkpoint={tmp_path / 'dense' / 'model'}",
         "train.steps=2", "train.eval_every=1", "train.final=last", "model.n_layers=1", "model.d_model=16",
         "model.n_heads=2", "model.d_ff=32", "--no-progress"])
    a, b = toy_lost.load(f"{run}@last"), sj.from_pretrained(run / "model")
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    np.testing.assert_array_equal(a.gate.bias, b.gate.bias)
    with pytest.raises(SystemExit, match="no checkpoints/"):
        toy_lost.load(f"{tmp_path / 'm'}@last")


def test_gap_noise_reads_both_sources_and_spreads_by_hand(tmp_path):
    """experiments/gap_noise.py: the mean and standard deviation of measured_ce from a step on, counted by hand, from
    a metrics.jsonl and from a control_gap.py records file; clear errors for a missing record or no measurements."""
    sys.path.insert(0, str(REPO / "experiments"))
    import gap_noise

    train = [{"step": 10, "measured_ce": 5.0, "beta": 9.0}, {"step": 20, "measured_ce": 0.01, "beta": 1.0},
             {"step": 20, "eval_ce": 3.0}, {"step": 30, "measured_ce": -0.03, "beta": 3.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in train) + "\n")
    (tmp_path / "evals.json").write_text(json.dumps({"a": {"train": train}}))
    for rows in (gap_noise.rows(str(tmp_path / "metrics.jsonl")), gap_noise.rows(str(tmp_path / "evals.json"), "a")):
        s = gap_noise.spread(rows, 20)
        assert s["rows"] == 2 and s["mean"] == pytest.approx(-0.01) and s["std"] == pytest.approx(0.02)
        # beta over the same two rows (1 and 3): median 2, 10th / 90th percentiles interpolated 1.2 / 2.8
        assert s["beta"] == pytest.approx({"p10": 1.2, "median": 2.0, "p90": 2.8})
    assert "beta" not in gap_noise.spread([{"step": 0, "measured_ce": 0.1}])
    with pytest.raises(SystemExit, match="holds no record 'b'"):
        gap_noise.rows(str(tmp_path / "evals.json"), "b")
    with pytest.raises(SystemExit, match="no logged measured_ce"):
        gap_noise.spread(train, 40)


def test_threshold_trim_keeps_the_selection_constraint_and_the_train_split_is_the_selection(tmp_path):
    """experiments/threshold_trim.py and ``checkpoint_evaluator(..., "train")``: (1) the "train" split of a saved
    model is the batches ``train.final=feasible`` decided on (its feasible.json numbers, recorded by the Trainer);
    (2) every move of the greedy search keeps the training CE under tau and closes edges; with no CE limit it closes
    every edge (density 0), and with tau at the start's CE and a zero tail slack it never raises the CE; (3) the end's
    held-out record is the library's evaluation of the model saved with the trimmed bias."""
    sys.path.insert(0, str(REPO / "experiments"))
    import dataclasses
    import math

    import jax.numpy as jnp
    import numpy as np
    import threshold_trim

    import sparsejax as sj
    from sparsejax.checkpoints.hf import save_pretrained
    from sparsejax.cli import main as cli
    from sparsejax.config import load_config
    from sparsejax.train.evaluate import checkpoint_evaluator, evaluate_checkpoint

    small = ["model.n_layers=1", "model.d_model=16", "model.n_heads=2", "model.d_ff=32"]
    cli(["pretrain", "toy_addition_pretrain", str(tmp_path / "dense"), "train.steps=2", *small, "--no-progress"])
    run = tmp_path / "run"
    cli(["posttrain", "toy_addition_posttrain", str(run), f"model.checkpoint={tmp_path / 'dense' / 'model'}",
         "train.steps=2", "train.eval_every=1", "constraint.slack=10", "train.feasible_tail_slack=10",
         "data.eval_batches=2", *small, "--no-progress"])
    feasible = json.loads((run / "feasible.json").read_text())
    cfg = load_config(run / "config.yaml", [f"model.checkpoint={run / 'model'}"])
    with checkpoint_evaluator(cfg, run / "model", "train") as (train, model):
        got = train(model.gate.bias, tail=0.02)
    assert got["eval_ce"] == pytest.approx(feasible["train_eval_ce"], rel=1e-6)
    assert got["edge_density"] == pytest.approx(feasible["train_edge_density"], rel=1e-6)
    assert got["tail_ce"] == pytest.approx(feasible["train_tail_ce"], rel=1e-6)

    free = threshold_trim.trim(cfg, run / "model", math.inf, None, None, step=4.0, report=lambda _: None)
    densities = [free["start"]["train"]["edge_density"]] + [m["train_edge_density"] for m in free["path"]]
    assert free["path"] and all(b < a for a, b in zip(densities, densities[1:]))
    assert free["end"]["train"]["edge_density"] == 0.0
    start_ce = got["eval_ce"]
    held = threshold_trim.trim(cfg, run / "model", start_ce, got["tail_ce"], 0.02, step=4.0, report=lambda _: None)
    assert all(m["train_ce"] <= start_ce and m["train_tail_ce"] <= got["tail_ce"] for m in held["path"])

    trimmed = dataclasses.replace(model, gate=dataclasses.replace(model.gate, bias=jnp.asarray(free["bias"])))
    save_pretrained(trimmed, tmp_path / "trimmed")
    want = evaluate_checkpoint(cfg, tmp_path / "trimmed")
    assert free["end"]["validation"]["eval_ce"] == pytest.approx(want["eval_ce"], rel=1e-6)
    assert free["end"]["validation"]["edge_density"] == want["edge_density"] == 0.0
    np.testing.assert_array_equal(np.asarray(sj.from_pretrained(tmp_path / "trimmed").gate.bias), free["bias"])


def test_layer_gap_closing_a_head_equals_zeroing_its_output_rows(tmp_path):
    """experiments/layer_gap.py --heads: the CE with one head's gates all closed equals the library's evaluation of
    the same sparse model saved with that head's rows of W_O set to zero (an independent route: weight surgery, the
    gates as trained); its cost is that CE minus the sparse model's; each head's density is the evaluation's."""
    sys.path.insert(0, str(REPO / "experiments"))
    import dataclasses

    import jax
    import numpy as np
    import layer_gap

    from sparsejax.checkpoints.hf import save_pretrained
    from sparsejax.cli import main as cli
    from sparsejax.config import load_config
    from sparsejax.train.evaluate import evaluate_checkpoint

    small = ["model.n_layers=1", "model.d_model=16", "model.n_heads=2", "model.d_ff=32"]
    cli(["pretrain", "toy_addition_pretrain", str(tmp_path / "dense"), "train.steps=2", *small, "--no-progress"])
    run = tmp_path / "run"
    cli(["posttrain", "toy_addition_posttrain", str(run), f"model.checkpoint={tmp_path / 'dense' / 'model'}",
         "train.steps=2", "train.eval_every=1", "data.eval_batches=2", *small, "--no-progress"])
    cfg = load_config(run / "config.yaml", [f"model.checkpoint={run / 'model'}"])
    res = layer_gap.layer_gap(cfg, run / "model", heads=True)
    base = evaluate_checkpoint(cfg, run / "model")
    assert res["eval_ce"] == pytest.approx(base["eval_ce"], rel=1e-6)
    assert [(r["layer"], r["head"]) for r in res["heads"]] == [(0, 0), (0, 1)]

    import sparsejax as sj

    model = sj.from_pretrained(run / "model")
    hd = model.config.head_dim
    for r in res["heads"]:
        kernel = np.array(model.params["layers"]["attn"]["o"]["kernel"])
        kernel[r["layer"], r["head"] * hd:(r["head"] + 1) * hd] = 0.0  # the head writes nothing
        params = jax.tree.map(lambda x: x, model.params)
        params["layers"]["attn"]["o"]["kernel"] = kernel
        save_pretrained(dataclasses.replace(model, params=params), tmp_path / f"zeroed{r['head']}")
        want = evaluate_checkpoint(cfg, tmp_path / f"zeroed{r['head']}")
        assert want["eval_ce"] != pytest.approx(base["eval_ce"], rel=1e-4)  # the surgery changes the loss
        assert r["eval_ce"] == pytest.approx(want["eval_ce"], rel=1e-5)
        assert r["cost"] == pytest.approx(r["eval_ce"] - base["eval_ce"], abs=1e-9)
        assert r["density"] == pytest.approx(base["edge_density_per_head"][r["layer"]][r["head"]], rel=1e-9)
