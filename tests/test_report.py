"""``sparsejax report``: summary table from the records, robust to empty / truncated metrics and partial runs, no
figure twice, no walk below two levels, a clear error for a directory holding many runs."""
import json

import numpy as np

import pytest

from sparsejax import report


def _records(tau=0.5):
    recs = [{"step": 0, "eval_ce": 0.7, "edge_density": 0.9, "edge_density_per_layer": [0.95, 0.85],
             "edge_density_per_head": [[1.0, 0.9], [0.8, 0.9]], "dense_eval_ce": 0.45}]
    for s in (10, 20):
        recs.append({"step": s, "loss": 1.0, "ce": 0.6 - s / 100, "expected_density": 0.5, "beta": 0.1, "tau": tau,
                     "ce_ema": 0.6, "train_edge_density": 0.5, "violation": 0.0})
    recs.append({"step": 20, "eval_ce": 0.48, "edge_density": 0.2, "edge_density_per_layer": [0.3, 0.1],
                 "edge_density_per_head": [[0.3, 0.3], [0.1, 0.1]], "tau": tau, "final": True})
    return recs


def _write(run, recs, tail=""):
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + tail)


def test_summary_table_and_sections(tmp_path):
    run = tmp_path / "run"
    _write(run, _records(), tail='{"step": 30, "loss": 0.')  # a killed writer's truncated last line
    (run / "best.json").write_text(json.dumps({"step": 10, "eval_ce": 0.49, "edge_density": 0.3,
                                               "edge_density_per_layer": [0.4, 0.2]}))
    header, rows = report.summary_rows(run)
    names = [r[0] for r in rows]
    assert names == ["dense (the starting checkpoint)", "gated, before post-training", "final",
                     "best feasible (best_model/)"]
    final = rows[2]
    assert final[1] == 20 and final[2] == 0.48 and final[3] == pytest.approx(0.03) and final[4] == 0.2
    (run / "feasible.json").write_text(json.dumps({"step": 0}))  # train.final=feasible rolled model/ back to step 0
    rows = report.summary_rows(run)[1]
    assert rows[3][0].startswith("model/ (train.final=feasible") and rows[3][1:3] == [0, 0.7]
    (run / "feasible.json").unlink()
    page = report.write_report(run).read_text()
    assert page.count("<figure>") == 2  # dynamics and the per-head heatmap, each once
    assert "held-out CE &lt;= tau = 0.5" in page and "no exported model/ yet" in page
    assert "density, multiplier, CE; dots" in page
    recs = _records(tau=0.3)  # constraint.tau_data=train: tau on training batches, the held-out target beside it
    recs[-1]["eval_tau"] = 0.55
    _write(tmp_path / "train_tau", recs)
    page = report.write_report(tmp_path / "train_tau").read_text()
    assert "held-out CE &lt;= 0.55 (the dense held-out CE + slack)" in page and "tau = 0.3" in page
    assert "held-out CE &lt;= tau" not in page
    recs = _records(tau=0.49)  # constraint.tau_data=control: the held-out target is the control's CE + slack
    recs[-1].update(eval_tau=0.52, control_eval_ce=0.51)
    _write(tmp_path / "control_tau", recs)
    page = report.write_report(tmp_path / "control_tau").read_text()
    assert "held-out CE &lt;= 0.52 (the dense control&#x27;s held-out CE + slack)" in page
    assert "dense held-out CE + slack" not in page
    # an experiment's results.json: records become a nested table, not a JSON dump; a dense run's caption says so
    (tmp_path / "results.json").write_text(json.dumps({"edge_density": 0.25, "heads": [{"layer": 0, "edges": 3},
                                                                                      {"layer": 1, "edges": 5}]}))
    _write(tmp_path / "dense", [{"step": 10, "loss": 1.0, "ce": 0.9, "expected_density": 1.0}])
    page = report.write_report(tmp_path, maps=False).read_text()
    assert "<th>layer</th><th>edges</th>" in page and "{&quot;layer&quot;" not in page
    assert "CE (a dense run); dots" in page


def test_partial_and_empty_runs(tmp_path):
    exp = tmp_path / "exp"
    _write(exp / "a", [])                                # started, nothing logged yet
    _write(exp / "b", _records()[:2])                    # killed before its first evaluation after step 0
    _write(exp / "c" / "seed1", _records())              # two levels down: found
    _write(exp / "d" / "x" / "deep", _records())         # three levels down: not walked
    page = report.write_report(exp, maps=False).read_text()
    assert "no records yet" in page and "run c/seed1" in page and "deep" not in page
    assert "run b" in page and "run a" in page


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.write_report(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no metrics.jsonl"):
        report.write_report(tmp_path)
    for i in range(report.MAX_RUNS + 1):
        _write(tmp_path / "many" / f"r{i}", [])
    with pytest.raises(ValueError, match="holds 17 runs.*give one run directory"):
        report.write_report(tmp_path / "many")


def test_circuitsvis_arrays_and_html(tmp_path):
    import jax

    import sparsejax as sj

    config = sj.ModelConfig(family="llama", vocab_size=16, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_position=8)
    model = sj.Model(config, sj.init_params(config, jax.random.PRNGKey(0)), sj.make_gate(0.0))
    tokens = [3, 1, 4, 1, 5]
    att = report.circuitsvis_patterns(model, tokens, model.gate)
    caps = sj.forward(config, model.params, [tokens], model.gate, capture="attn.hook_pattern")[1]["captures"]
    assert att.shape == (4, 5, 5)
    np.testing.assert_array_equal(att[3], np.asarray(caps["blocks.1.attn.hook_pattern"][0, 1]))  # layer-major
    page = report.attention_html(tmp_path / "a.html", ["a", "</script>", "c", "d", "e"], att).read_text()
    assert "http" not in page and page.count("</script>") == 1 and '"head 3"' in page
    with pytest.raises(ValueError, match=r"\[heads, dest, src\] with dest = src = 4 tokens"):
        report.attention_html(tmp_path / "b.html", list("abcd"), att)


def test_draw_circuit_one_line_per_kept_edge(tmp_path):
    import sparsejax as sj
    from sparsejax import circuits

    config = sj.ModelConfig(family="llama", vocab_size=16, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=32,
                            max_position=8)
    ws, rs = circuits.writers(config), circuits.readers(config)
    keep = np.zeros((len(ws), len(rs)), bool)
    chosen = [(("embed",), ("q", 0, 1)), (("head", 0, 1), ("v", 1, 1)), (("head", 1, 2), ("logits",)),
              (("mlp", 0), ("mlp", 1))]
    for w, r in chosen:
        keep[ws.index(w), rs.index(r)] = True
    scores = np.where(keep, 2.0, 0.0)
    fig = report.draw_circuit(config, keep, tmp_path / "c.png", scores=scores)
    ax = fig.axes[0]
    drawn = [ln for ln in ax.get_lines() if len(ln.get_xdata())]
    assert len(drawn) == 4 and (tmp_path / "c.png").stat().st_size > 0
    colours = sorted(ln.get_color() for ln in drawn)
    assert colours == sorted(report.READER_COLOURS[r[0]] for _, r in chosen)
    # the v input of kv group 1 in layer 1 feeds query heads 2 and 3: the edge ends at their centre (x = 2.5)
    assert any(list(ln.get_xdata()) == [1, 2.5] for ln in drawn)
    faint = [t.get_text() for t in ax.texts if t.get_color() == "lightgray"]
    assert "0.1" not in faint and "1.2" not in faint and "1.3" not in faint and "0.0" in faint
    with pytest.raises(ValueError, match=r"keep must be a \[writers, readers\]"):
        report.draw_circuit(config, keep[:, :-1])
    # a circuit larger than max_edges: its strongest edges only, the title says how many of how many
    ranked = np.where(keep, np.array([[1.0 + i + 10 * j for j in range(len(rs))] for i in range(len(ws))]), 0.0)
    top2 = sorted(zip(*np.nonzero(keep)), key=lambda ij: -ranked[ij])[:2]
    fig = report.draw_circuit(config, keep, scores=ranked, max_edges=2, title="t")
    drawn = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata())]
    assert len(drawn) == 2 and "the 2 strongest of its 4 edges" in fig.axes[0].get_title()
    assert sorted(ln.get_color() for ln in drawn) == sorted(report.READER_COLOURS[rs[j][0]] for _, j in top2)
    with pytest.raises(ValueError, match="max_edges=2 picks the strongest edges of the 4: pass scores="):
        report.draw_circuit(config, keep, max_edges=2)


def test_pick_heads_finds_the_changed_the_sparse_and_covers_layers(tmp_path):
    L, H, T = 6, 4, 8
    causal = np.tril(np.ones((T, T)))
    dense_p = np.broadcast_to(causal / causal.sum(-1, keepdims=True), (L, H, T, T)).copy()
    adj = np.zeros((L, H, T, T), bool)
    adj[..., 0] = True                      # every head keeps only the first token (trivial) ...
    adj[2, 3, 5, 2] = True                  # ... but L2 h3 keeps one non-trivial edge: the sparsest non-trivial head
    adj[4, 1] = causal.astype(bool)         # L4 h1 stays dense: the busiest head, and the least changed
    adj[3, 0, 6, 3] = adj[3, 0, 7, 4] = True  # L3 h0: two non-trivial edges
    sparse_p = dense_p * adj
    sparse_p[0, 2] = np.eye(T)              # L0 h2 turned into a self-attention head: changed most
    picked = report.pick_heads((dense_p, None), (sparse_p, adj), n=12)
    why = {(l, h): w for l, h, w in picked}
    assert len(picked) <= 12 and why[(0, 2)] == "most changed"
    assert why[(2, 3)] == why[(3, 0)] == "sparsest non-trivial"
    assert (4, 1) in why                               # the busiest head (a non-trivial one too)
    assert {l for l, _, _ in picked} == set(range(L))  # every layer is covered
    out = report.plot_attention_maps((dense_p, None), (sparse_p, adj), [str(i) for i in range(T)],
                                     tmp_path / "maps.png", heads=picked)
    assert out.stat().st_size > 0


@pytest.mark.parametrize("annealed", [True, False])
def test_dynamics_draws_the_density_target_as_it_moved(tmp_path, monkeypatch, annealed):
    """A density target annealed over the run (constraint.anneal_steps) is drawn at each logged step, a fixed one
    as one horizontal line at its value."""
    from matplotlib.figure import Figure

    targets = [0.4, 0.2, 0.1] if annealed else [0.05] * 3
    recs = [{"step": 0, "eval_ce": 0.7, "edge_density": 0.9, "edge_density_per_layer": [0.95, 0.85]}]
    for s, t in zip((10, 20, 30), targets):
        recs.append({"step": s, "loss": 1.0, "ce": 0.6, "expected_density": 0.5, "beta": 0.1,
                     "density_target": t, "density_ema": 0.5, "train_edge_density": 0.5, "violation": 0.0})
    recs.append({"step": 30, "eval_ce": 0.5, "edge_density": 0.2, "edge_density_per_layer": [0.3, 0.1],
                 "final": True})
    _write(tmp_path / "run", recs)
    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: drawn.append(self))
    report.plot_dynamics(tmp_path / "run", tmp_path / "d.png")
    (line,) = [ln for ln in drawn[0].axes[0].get_lines() if ln.get_label().startswith("density target")]
    if annealed:
        assert list(line.get_xdata()) == [10, 20, 30] and list(line.get_ydata()) == targets
    else:
        assert list(line.get_ydata()) == [0.05, 0.05]  # axhline: one value at both ends
