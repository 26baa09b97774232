"""The trainer's hooks and trackers, the run folder (RunDir) and its typed records: a tracker passed in receives
every record the run writes; a hook runs at its steps; the default hooks can be taken out and put back; the
records of old runs (no kind field, truncated lines) read back typed."""
import json

import pytest

from sparsejax.config import load_config
from sparsejax.train import Callback, RunDir, Trainer
from sparsejax.train.hooks import Hooks
from sparsejax.train.records import EvalRecord, FinalRecord, Record, StartRecord, TrainRecord, parse

TINY = ["model.family=llama", "model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.d_ff=64",
        "data.batch_size=16", "data.eval_batches=2", "model.checkpoint=null"]


class ListTracker:
    def __init__(self):
        self.records, self.closed = [], 0

    def log(self, record):
        self.records.append(record)

    def close(self):
        self.closed += 1


class Phases(Callback):
    def __init__(self):
        self.calls = []

    def on_start(self, info):
        self.calls.append(("start", info.step))

    def on_step(self, info):
        self.calls.append(("step", info.step, info.last))

    def on_end(self, info):
        self.calls.append(("end", info.step, info.evaluation is not None))


def test_a_tracker_and_hooks_passed_in_see_the_whole_run(tmp_path):
    cfg = load_config("toy_addition_posttrain", TINY + ["train.steps=7", "train.log_every=2", "train.eval_every=3"])
    tracker = ListTracker()
    trainer = Trainer(cfg, tmp_path / "run", progress=False, trackers=[tracker])
    every2, phases, after_eval = [], Phases(), []
    trainer.add_hook(lambda info: every2.append((info.step, info.last, info.outputs is not None)), every=2,
                     name="every2")
    trainer.add_hook(phases, every=3, last=True, name="phases")
    trainer.add_hook(lambda info: after_eval.append((info.step, info.evaluation and info.evaluation.step)), every=3,
                     name="after_eval", before="checkpoint")
    assert trainer.hooks.names() == ["log", "evaluate", "best", "select", "after_eval", "checkpoint", "export",
                                     "every2", "phases"]  # select: the preset's train.final=feasible
    dicts = []
    final = trainer.fit(callbacks=[dicts.append])

    text = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    lines = [json.loads(line) for line in text]
    assert [r.to_dict() for r in tracker.records] == lines == dicts  # every record, as written
    assert [json.dumps(r.to_dict()) for r in RunDir(tmp_path / "run").records()] == text  # read back byte for byte
    assert all(type(d) is dict for d in dicts) and tracker.closed == 1
    assert [(r.kind, r.step) for r in tracker.records] == [
        ("start", 0), ("train", 2), ("eval", 3), ("train", 4), ("train", 6), ("eval", 6), ("train", 7), ("final", 7)]
    assert every2 == [(2, False, True), (4, False, True), (6, False, True)]  # every=2, not the last step (7)
    assert phases.calls == [("start", 0), ("step", 3, False), ("step", 6, False), ("step", 7, True), ("end", 7, True)]
    assert after_eval == [(3, 3), (6, 6)]  # it sees the evaluation the "evaluate" hook made at its step

    run = RunDir(tmp_path / "run")
    assert [r.step for r in run.records("train")] == [2, 4, 6, 7]
    assert [type(r) for r in run.records("eval")] == [StartRecord, EvalRecord, EvalRecord, FinalRecord]
    last = run.records("final")[-1]
    assert final == {k: v for k, v in last.items() if k != "final"} and last.tau == pytest.approx(trainer.tau)
    train = run.records("train")[-1]
    assert isinstance(train, TrainRecord) and train["beta"] == train.extra["beta"] and train.ce == lines[-2]["ce"]
    assert run.model.exists() and sorted(p.name for p in run.checkpoints.iterdir()) == ["7"]


def test_default_hooks_can_be_taken_out_and_put_back(tmp_path):
    cfg = load_config("toy_addition_pretrain", TINY + ["train.steps=3", "train.log_every=1"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    run = trainer.dir
    export, log = trainer.remove_hook("export"), trainer.remove_hook("log")
    with pytest.raises(KeyError, match="no hook named 'export'; the hooks are evaluate, best, checkpoint"):
        trainer.remove_hook("export")
    final = trainer.fit()
    assert not run.model.exists() and run.records("train") == []  # no export, no training records
    assert [r.step for r in run.records("final")] == [3] == [final["step"]]
    trainer.add_hook(export)
    trainer.add_hook(log, before="evaluate")
    assert trainer.hooks.names() == ["log", "evaluate", "best", "checkpoint", "export"]
    trainer.cfg.train.steps = 5
    trainer.fit()  # resumes from the checkpoint at step 3
    assert run.model.exists() and [r.step for r in run.records("train")] == [4, 5]
    assert [r.step for r in run.records("final")] == [3, 5]
    with pytest.raises(ValueError, match="a hook named 'log' is already registered"):
        trainer.add_hook(lambda info: None, name="log")
    with pytest.raises(ValueError, match="every must be an integer >= 0"):
        trainer.add_hook(lambda info: None, every=-1, name="x")
    with pytest.raises(KeyError, match="no hook named 'nope'"):
        Hooks().add(lambda info: None, before="nope")


def test_records_of_old_runs_read_back_typed(tmp_path):
    run = RunDir(tmp_path / "run")
    lines = [{"step": 0, "eval_ce": 0.7, "edge_density": 0.9},                      # a start without dense_eval_ce
             {"step": 10, "ce": 0.6, "tau": 0.5},                                     # an older training record
             {"step": 10, "eval_ce": 0.5, "edge_density": 0.2, "something_new": 1},
             {"step": 12, "my_metric": 3.0},                                          # a user's own line
             {"step": 12, "kind": "eval", "eval_ce": 0.4},                            # an explicit kind wins
             {"step": 20, "eval_ce": 0.48, "tau": 0.5, "final": True}]
    run.path.mkdir()
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 30, "loss": 0.')
    recs = run.records()
    assert [type(r) for r in recs] == [StartRecord, TrainRecord, EvalRecord, Record, EvalRecord, FinalRecord]
    assert [r.to_dict() for r in recs] == lines  # the same fields back
    assert recs[1].loss is None and recs[1].extra == {"tau": 0.5} and recs[2]["something_new"] == 1
    assert [r.step for r in run.records("eval")] == [0, 10, 12, 20] and run.records(FinalRecord) == [recs[-1]]
    assert parse({"no": "step"}) is None and isinstance(parse({"step": 1, "kind": "train"}), Record)
    run.reset_records(10)  # a resume from the checkpoint at step 10 keeps the lines up to it
    assert [r.to_dict() for r in run.records()] == lines[:3]
    run.reset_records(None)
    assert run.metrics.read_text() == "" and RunDir.find(tmp_path) == [run]


def test_model_record_is_the_evaluation_of_the_model_exported(tmp_path):
    """model_record(): the final evaluation, or with feasible.json that of its step (a rolled-back run's output)."""
    run = RunDir(tmp_path / "run")
    lines = [{"step": 0, "eval_ce": 0.7, "edge_density": 0.9}, {"step": 100, "eval_ce": 0.5, "edge_density": 0.2},
             {"step": 200, "eval_ce": 0.9, "edge_density": 0.1}, {"step": 200, "eval_ce": 0.9, "edge_density": 0.1,
                                                                  "tau": 0.6, "final": True}]
    run.path.mkdir()
    assert run.model_record() is None
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert isinstance(run.model_record(), FinalRecord) and run.model_record().eval_ce == 0.9
    run.feasible.write_text(json.dumps({"step": 100}))
    assert run.model_record().to_dict() == lines[1]
    run.feasible.write_text(json.dumps({"step": 200}))
    assert isinstance(run.model_record(), FinalRecord)


@pytest.mark.parametrize("sense", ["ce", "density"])
def test_keep_best_keeps_the_best_feasible_evaluation_of_each_sense(tmp_path, sense):
    """best_model/: CE-target mode keeps the sparsest evaluation with CE <= tau; density-target mode (tau = the
    density target) the lowest CE with density <= the target. Each kept evaluation is exported and in best.json."""
    from sparsejax.train import checkpointing

    exported = []
    export = lambda path: exported.append(path)
    evals = [(0.30, 0.50), (0.10, 0.20), (0.12, 0.05), (0.25, 0.04), (0.11, 0.03), (0.09, 0.06)]  # (CE, density)
    tau, kept = {"ce": (0.12, [1, 2, 4]), "density": (0.05, [2, 4])}[sense]
    for i, (ce, d) in enumerate(evals):
        rec = EvalRecord(step=10 * i, eval_ce=ce, edge_density=d)
        assert checkpointing.keep_best(tmp_path, rec, tau, export, sense) == (i in kept)
    assert len(exported) == len(kept) and exported[0] == RunDir(tmp_path).best_model
    assert RunDir(tmp_path).best_record()["step"] == 10 * kept[-1]
    assert not checkpointing.keep_best(tmp_path, EvalRecord(step=99, eval_ce=0.0, edge_density=0.0), None, export)
