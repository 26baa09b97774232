"""A constraint controller is one file: a controller registered here, outside the library, post-trains the toy with
its own metrics recorded under its own names; unknown names are refused with the closest ones; the run config's
constraint section is the shared keys plus every controller's options."""
import dataclasses
import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax import controllers
from sparsejax.config import ConstraintSection, load_config
from sparsejax.controllers import Controller, option, register

TINY = ["model.family=llama", "model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.d_ff=64",
        "data.batch_size=16", "data.eval_batches=2", "train.log_every=1"]


class ConstantState(NamedTuple):
    const_weight: jax.Array  # the density weight (the default loss_weights reads the field named `multiplier`)
    count: jax.Array
    seen: jax.Array          # the last constraint value the step passed


@dataclasses.dataclass
class ConstantOptions:
    beta_init: float = option(1e-2, doc="the constant weight (an existing key)")


@register
class Constant(Controller):
    """A constant multiplier: the density weight stays at constraint.beta_init; it counts its updates."""
    name = "test_constant"
    Options = ConstantOptions
    State = ConstantState
    multiplier = "const_weight"
    logged = ("const_weight", "const_updates", "const_seen")
    senses = controllers.SENSES

    def transform(self, o, setup):
        def init(params=None):
            return ConstantState(jnp.float32(o.beta_init), jnp.zeros((), jnp.int32), jnp.float32(0.0))

        def update(updates, state, params=None, *, constraint, **extra):
            return updates, ConstantState(state.const_weight, state.count + 1, jnp.asarray(constraint, jnp.float32))

        return optax.GradientTransformationExtraArgs(init, update)

    def metrics(self, state):
        return {"const_weight": state.const_weight, "const_updates": state.count, "const_seen": state.seen}


def test_a_controller_registered_outside_post_trains_the_toy(tmp_path):
    from sparsejax import report
    from sparsejax.train import Trainer

    cfg = load_config("toy_addition_posttrain", TINY + ["train.steps=3", "constraint.method=test_constant",
                                                        "constraint.pi_ki_follow_lr=false", "constraint.beta_init=0.05"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert isinstance(trainer.state["mult_state"], ConstantState)
    trainer.fit()
    recs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if "ce" in r]
    assert [r["step"] for r in train] == [1, 2, 3]
    for r in train:  # its own names; the loss weighted by its multiplier; it saw the measured (deterministic) CE
        assert r["const_weight"] == pytest.approx(0.05) and r["const_updates"] == r["step"]
        assert r["const_seen"] == r["measured_ce"] and "beta" not in r and "ce_ema" not in r
        np.testing.assert_allclose(r["loss"], r["ce"] + 0.05 * r["expected_density"], rtol=1e-5)
    assert int(trainer.state["mult_state"].count) == 3 and recs[-1]["tau"] == pytest.approx(trainer.tau)
    assert "const_weight" in controllers.multiplier_names()
    assert report.plot_dynamics(tmp_path / "run" / "metrics.jsonl", tmp_path / "dyn.png").exists()


def test_unknown_names_are_refused_with_the_closest():
    with pytest.raises(ValueError, match=r"unknown constraint controller .*'gecko'; did you mean geco\?"):
        controllers.get("gecko")
    with pytest.raises(ValueError, match=r"constraint.method='gecko' must be a registered controller: pi, geco, "
                                         r"dual_ascent, penalty, none or test_constant; did you mean geco\?"):
        load_config("toy_addition_posttrain", ["constraint.method=gecko"])
    assert load_config("toy_addition_posttrain", ["constraint.method=test_constant",
                                                  "constraint.pi_ki_follow_lr=false"]).constraint.method == "test_constant"


def test_registration_refuses_taken_names_new_keys_and_disagreeing_options():
    with pytest.raises(ValueError, match="new, non-empty name"):
        register(type("Again", (Constant,), {"name": "pi"}))
    with pytest.raises(TypeError, match="abstract"):
        register(type("Half", (Controller,), {"name": "test_half"}))

    @dataclasses.dataclass
    class NewKey:
        test_gain: float = option(1.0)

    with pytest.raises(ValueError, match="its options test_gain are no constraint.. keys"):
        register(type("Late", (Constant,), {"name": "test_late", "Options": NewKey}))

    @dataclasses.dataclass
    class OtherDefault:
        beta_min: float = option(0.5)

    with pytest.raises(ValueError, match="declares constraint.beta_min as .* = 0.5, but it is already"):
        register(type("Clash", (Constant,), {"name": "test_clash", "Options": OtherDefault}))
    assert "test_late" not in controllers.CONTROLLERS and "test_clash" not in controllers.CONTROLLERS


def test_the_constraint_section_is_the_shared_keys_and_every_controllers_options():
    from sparsejax.config import _ConstraintShared

    names = [f.name for f in dataclasses.fields(ConstraintSection)]
    want = [f.name for f in dataclasses.fields(_ConstraintShared)]
    for ctrl in controllers.CONTROLLERS.values():
        want += [f.name for f in dataclasses.fields(ctrl.Options) if f.name not in want]
    assert names == want and len(set(names)) == len(names)
    c = load_config("toy_addition_posttrain", ["constraint.eta=0.3"]).constraint
    assert controllers.get("pi").options(c).pi_ki == 0.05 and controllers.get("geco").options(c).eta == 0.3
    with pytest.raises(ValueError, match=r"constraint.eta=-1.0 must be a number > 0"):  # the option's own rule
        load_config("toy_addition_posttrain", ["constraint.eta=-1"])
