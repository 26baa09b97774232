"""GECO and dual ascent on a 2-parameter problem with a known constrained optimum, and the objective pieces."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax import constrained, objective

# minimise f(x) = |x|^2 ("density") subject to c(x) = |x - (2, 1)|^2 <= 1 ("CE <= tau").
# Optimum: x* = (2, 1)(1 - 1/sqrt 5), where grad f + lam grad c = 0 with lam* = sqrt(5) - 1 (beta* = 1 / lam*).
CENTRE = jnp.array([2.0, 1.0])
X_STAR = np.array([2.0, 1.0]) * (1 - 1 / np.sqrt(5))
LAM_STAR = np.sqrt(5) - 1
f = lambda x: jnp.sum(x**2)
c = lambda x: jnp.sum((x - CENTRE) ** 2)


def solve(multiplier, steps=6000, lr=0.01, constrained_fn=c):
    """Minimise ``w_c c + w_f f`` with the multiplier's weights; the multiplier sees ``constrained_fn(x)``."""
    opt = optax.chain(optax.sgd(lr), multiplier)
    x = jnp.zeros(2)
    state = opt.init(x)

    @jax.jit
    def step(x, state):
        w_c, w_f = constrained.loss_weights(state)
        grads = jax.grad(lambda x: w_c * c(x) + w_f * f(x))(x)
        updates, state = opt.update(grads, state, x, constraint=constrained_fn(x))
        return optax.apply_updates(x, updates), state

    for _ in range(steps):
        x, state = step(x, state)
    return np.asarray(x), state


def test_dual_ascent_converges_to_kkt_point():
    x, state = solve(constrained.dual_ascent(1.0, lr=0.05, kp=0.5))
    np.testing.assert_allclose(x, X_STAR, atol=2e-3)
    np.testing.assert_allclose(float(constrained.find_state(state).lam), LAM_STAR, rtol=1e-2)
    assert abs(float(c(x)) - 1.0) < 5e-3


def test_geco_converges_to_kkt_point():
    x, state = solve(constrained.geco(1.0, beta_init=0.1, eta=0.05, alpha=0.9))
    np.testing.assert_allclose(x, X_STAR, atol=5e-3)
    np.testing.assert_allclose(float(constrained.find_state(state).beta), 1 / LAM_STAR, rtol=2e-2)
    assert abs(float(c(x)) - 1.0) < 1e-2


def test_geco_beta_grows_under_target_and_shrinks_over():
    t = constrained.geco(2.0, beta_init=1.0, eta=0.5, alpha=0.5)
    s = t.init(None)
    betas = []
    for ce in [1.0, 1.0, 1.0, 3.5, 3.5, 3.5]:
        _, s = t.update(None, s, constraint=ce)
        betas.append(float(s.beta))
    assert betas[0] > 1.0 and betas[1] > betas[0] and betas[2] > betas[1]  # under target: grows
    assert betas[4] < betas[3] < betas[2] and betas[5] < betas[4]          # over: shrinks
    # exact first step: C_0 = CE_0, beta = exp(eta (tau - C_0))
    np.testing.assert_allclose(betas[0], np.exp(0.5 * 1.0), rtol=1e-6)
    m = constrained.metrics(s)
    assert set(m) == {"beta", "ce_ema", "tau", "violation"} and float(m["violation"]) > 0


def test_geco_relative_and_clipped_steps():
    t = constrained.geco(0.01, beta_init=1.0, eta=0.5, alpha=0.0, relative=True, max_log_step=0.05)
    s = t.init(None)
    _, s = t.update(None, s, constraint=0.008)  # 20% under target: exp(0.5 * 0.2) = exp(0.1), clipped to exp(0.05)
    np.testing.assert_allclose(float(s.beta), np.exp(0.05), rtol=1e-6)
    _, s = t.update(None, s, constraint=0.0095)  # exp(0.5 * 0.05)
    np.testing.assert_allclose(float(s.beta), np.exp(0.05 + 0.025), rtol=1e-6)
    _, s = t.update(None, s, constraint=5.0)  # far over: one step costs at most exp(-0.05)
    np.testing.assert_allclose(float(s.beta), np.exp(0.025), rtol=1e-6)


def test_state_is_a_jittable_checkpointable_pytree():
    t = constrained.dual_ascent(1.0)
    s = t.init(None)
    s2 = jax.jit(lambda s: t.update(None, s, constraint=3.0)[1])(s)
    leaves = jax.tree.leaves(s2)
    assert all(isinstance(x, jax.Array) for x in leaves) and float(s2.lam) == pytest.approx(1.2)
    with pytest.raises(ValueError, match="alpha"):
        constrained.geco(1.0, alpha=1.0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        constrained.dual_ascent(1.0, lr=0.0)
    with pytest.raises(ValueError, match="exactly one"):
        constrained.loss_weights(optax.adam(1e-3).init(jnp.zeros(2)))


def test_objective_pieces_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7))
    targets = rng.integers(0, 7, size=(2, 5))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -np.take_along_axis(logp, targets[..., None], -1).mean()
    np.testing.assert_allclose(objective.cross_entropy(jnp.asarray(logits), jnp.asarray(targets)), want, rtol=1e-5)
    mask = np.array([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    want_masked = -(np.take_along_axis(logp, targets[..., None], -1)[..., 0] * mask).sum() / 3
    np.testing.assert_allclose(objective.cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask)),
                               want_masked, rtol=1e-5)
    teacher = rng.normal(size=(2, 5, 7))
    tp = np.exp(teacher) / np.exp(teacher).sum(-1, keepdims=True)
    kl = (tp * (np.log(tp) - logp)).sum(-1).mean()
    np.testing.assert_allclose(objective.distillation_kl(jnp.asarray(logits), jnp.asarray(teacher)), kl, rtol=1e-5)


# ---- the PI controller and the density-target sense (issue H) ---------------------------------------------
def test_pi_controller_converges_to_kkt_point():
    x, state = solve(constrained.pi_control(1.0, beta_init=0.1, ki=0.01, kp=0.2, alpha=0.9), steps=8000)
    np.testing.assert_allclose(x, X_STAR, atol=5e-3)
    np.testing.assert_allclose(float(constrained.find_state(state).beta), 1 / LAM_STAR, rtol=3e-2)


def test_pi_drops_at_once_when_violated_and_integral_is_bounded():
    t = constrained.pi_control(0.1, beta_init=1.0, ki=0.02, kp=2.0, alpha=0.0, error_clip=1.0)
    s = t.init(None)
    _, s = t.update(None, s, constraint=0.05)  # under target by half: e = +0.5
    np.testing.assert_allclose(float(s.integral), 0.01, rtol=1e-5)
    np.testing.assert_allclose(float(s.beta), np.exp(0.01 + 1.0), rtol=1e-5)
    _, s = t.update(None, s, constraint=5.0)  # far over: e clipped to -1, the P term drops beta by e^-2 at once
    np.testing.assert_allclose(float(s.integral), 0.01 - 0.02, rtol=1e-4)
    np.testing.assert_allclose(float(s.beta), np.exp(-0.01 - 2.0), rtol=1e-4)
    _, s = t.update(None, s, constraint=0.1)  # back on target: released at once (no windup)
    np.testing.assert_allclose(float(s.beta), np.exp(-0.01), rtol=1e-4)


def test_pi_anti_windup_unwinds_faster_in_density_mode():
    """Density far above target for 100 steps winds the integral up by ki per step; once the density is below
    target, ki_down unwinds it ki_down / ki times faster (by hand: 100 * 0.02 = 2 up, then 0.2 per step down)."""
    t = constrained.pi_control(0.02, beta_init=1.0, ki=0.02, kp=0.0, alpha=0.0, sense="density", ki_down=0.2)
    s = t.init(None)
    for _ in range(100):
        _, s = t.update(None, s, constraint=0.5)   # e = +1 (clipped): beta must grow
    np.testing.assert_allclose(float(s.integral), 2.0, rtol=1e-4)
    for _ in range(5):
        _, s = t.update(None, s, constraint=0.01)  # half the target: e = -0.5, at ki_down
    np.testing.assert_allclose(float(s.integral), 2.0 - 5 * 0.2 * 0.5, rtol=1e-4)
    with pytest.raises(ValueError, match="ki_down must be > 0"):
        constrained.pi_control(0.02, ki_down=0.0)


def test_pi_anti_windup_waits_for_an_annealed_target_to_settle():
    """Annealed over 10 steps: below the moving target the integral falls at ki (by hand: 0.02 * -0.5 a step);
    once the target has settled, at ki_down (0.2 * -0.5)."""
    t = constrained.pi_control(0.02, beta_init=1.0, ki=0.02, kp=0.0, alpha=0.0, sense="density", ki_down=0.2,
                               target_start=0.02, anneal_steps=10)  # start = end: a constant target, annealed
    s = t.init(None)
    for _ in range(10):
        _, s = t.update(None, s, constraint=0.01)  # e = -0.5 while annealing: at ki
    np.testing.assert_allclose(float(s.integral), -10 * 0.02 * 0.5, atol=1e-6)
    _, s = t.update(None, s, constraint=0.01)      # settled: at ki_down
    np.testing.assert_allclose(float(s.integral), -10 * 0.02 * 0.5 - 0.2 * 0.5, atol=1e-6)


def test_geco_asymmetric_steps():
    t = constrained.geco(1.0, beta_init=1.0, eta=1.0, alpha=0.0, relative=True, max_log_step=0.01,
                         max_log_step_down=0.5)
    s = t.init(None)
    _, s = t.update(None, s, constraint=0.0)
    np.testing.assert_allclose(float(s.beta), np.exp(0.01), rtol=1e-6)
    _, s = t.update(None, s, constraint=10.0)
    np.testing.assert_allclose(float(s.beta), np.exp(0.01 - 0.5), rtol=1e-6)


# density target: minimise "CE" c(x) = |x - (2, 1)|^2 subject to "density" f(x) = |x|^2 <= 1.
# Optimum x* = (2, 1) / sqrt 5 with multiplier (weight of f) lam* = |x* - C| / |x*| = sqrt 5 - 1.
@pytest.mark.parametrize("make", [
    lambda: constrained.pi_control(1.0, beta_init=0.1, ki=0.01, kp=0.2, alpha=0.9, sense="density"),
    lambda: constrained.geco(1.0, beta_init=0.1, eta=0.05, alpha=0.9, sense="density")])
def test_density_target_sense_converges_to_kkt_point(make):
    x, state = solve(make(), steps=8000, constrained_fn=f)
    np.testing.assert_allclose(x, np.array([2.0, 1.0]) / np.sqrt(5), atol=5e-3)
    np.testing.assert_allclose(float(constrained.find_state(state).beta), np.sqrt(5) - 1, rtol=3e-2)


def test_bad_controller_arguments():
    with pytest.raises(ValueError, match="sense must be one of"):
        constrained.pi_control(1.0, sense="loss")
    with pytest.raises(ValueError, match="kp must be >= 0"):
        constrained.pi_control(1.0, kp=-1.0)
    with pytest.raises(ValueError, match="ki must be > 0"):
        constrained.pi_control(1.0, ki=0.0)


def test_pi_error_in_units_of_a_given_scale():
    t = constrained.pi_control(3.6, beta_init=1.0, ki=0.1, kp=0.0, alpha=0.0, scale=0.01)
    s = t.init(None)
    _, s = t.update(None, s, constraint=3.595)  # 0.005 under target = half a slack unit
    np.testing.assert_allclose(float(s.integral), 0.05, rtol=1e-4)
    _, s = t.update(None, s, constraint=3.7)    # 0.1 over = 10 units, clipped to -1
    np.testing.assert_allclose(float(s.integral), 0.05 - 0.1, rtol=1e-4)


def test_annealed_target_schedule_by_hand():
    """Geometric from 0.5 to 0.02 over 4 steps: 0.5 * 0.04 ** (k / 4), then 0.02 for ever."""
    sched = constrained.target_schedule(0.02, 0.5, 4)
    want = [0.5 * 0.04 ** (k / 4) for k in range(5)] + [0.02, 0.02]
    np.testing.assert_allclose([float(sched(k)) for k in range(7)], want, rtol=1e-6)
    assert float(constrained.target_schedule(0.3)(123)) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="needs anneal_steps > 0 and target_start"):
        constrained.target_schedule(0.02, None, 10)


@pytest.mark.parametrize("make", [
    lambda **kw: constrained.pi_control(0.02, beta_init=1.0, ki=0.1, kp=0.0, alpha=0.0, sense="density", error_clip=10.0,
                                       **kw),
    lambda **kw: constrained.geco(0.02, beta_init=1.0, eta=0.1, alpha=0.0, sense="density", relative=True, **kw)])
def test_annealed_density_target_drives_the_multiplier(make):
    """A density of 0.1 is under an annealed target that starts at 0.4 (beta falls) and over it once the target
    has passed 0.1 (beta rises); the error of each step is against that step's target (by hand, relative)."""
    t = make(target_start=0.4, anneal_steps=4)  # targets 0.4 * 0.05 ** (k / 4): 0.4, 0.189, 0.0894, 0.0423, 0.02
    s = t.init(None)
    np.testing.assert_allclose(float(s.tau), 0.4, rtol=1e-6)
    logs = []
    for _ in range(6):
        _, s = t.update(None, s, constraint=0.1)
        logs.append(float(np.log(s.beta)))
    # the log-beta step is 0.1 * e with e = -(target_k - 0.1) / target_k (pi: ki * e; geco: eta * e)
    targets = [0.4 * 0.05 ** (k / 4) for k in range(5)] + [0.02]
    want = np.cumsum([0.1 * -(tk - 0.1) / tk for tk in targets])
    np.testing.assert_allclose(logs, want, rtol=1e-4, atol=1e-6)
    assert logs[1] < logs[0] and logs[2] > logs[1]  # falls while the target is above 0.1, rises once below
    np.testing.assert_allclose(float(s.tau), 0.02, rtol=1e-6)


def test_pi_integral_growth_follows_the_lr_when_asked():
    """ki_up_scale scales the integral's growth only (by hand: e = +0.5 -> 0.02 * 0.5 * scale; e = -0.5 -> full ki);
    from a run config, the scale is the lr schedule over its peak (pi_ki_follow_lr)."""
    t = constrained.pi_control(0.02, beta_init=1.0, ki=0.02, kp=0.0, alpha=0.0, sense="density",
                               ki_up_scale=lambda count: 1.0 - count / 10)
    s = t.init(None)
    _, s = t.update(None, s, constraint=0.03)  # count 0: scale 1; density over its target: beta grows
    _, s = t.update(None, s, constraint=0.03)  # count 1: scale 0.9
    np.testing.assert_allclose(float(s.integral), 0.02 * 0.5 * (1 + 0.9), atol=1e-6)
    _, s = t.update(None, s, constraint=0.01)  # under its target: falls at the full ki
    np.testing.assert_allclose(float(s.integral), 0.02 * 0.5 * 1.9 - 0.02 * 0.5, atol=1e-6)

    from sparsejax.config import load_config
    from sparsejax.train.step import make_multiplier

    over = ["constraint.method=pi", "constraint.sense=density", "constraint.density_target=0.02",
            "constraint.pi_kp=0", "constraint.alpha=0", "constraint.beta_init=1", "train.steps=10", "train.warmup=0",
            "train.schedule=linear", "train.lr_final=0.0"]
    runs = {}
    for follow in ("false", "true"):
        m = make_multiplier(load_config("toy_addition_posttrain", over + [f"constraint.pi_ki_follow_lr={follow}"]), 0.02)
        s = m.init(None)
        for _ in range(10):
            _, s = m.update(None, s, constraint=0.03)
        runs[follow] = float(s.integral)
    ki = load_config("toy_addition_posttrain", over).constraint.pi_ki
    np.testing.assert_allclose(runs["false"], 10 * ki * 0.5, rtol=1e-5)
    np.testing.assert_allclose(runs["true"], ki * 0.5 * sum(1 - k / 10 for k in range(10)), rtol=1e-5)


def test_pi_integral_fall_follows_the_lr_when_asked():
    """ki_down_scale scales the integral's fall only (by hand: e = -0.5 -> -0.02 * 0.5 * scale; e = +0.5 -> full
    ki, or ki_up_scale's); from a run config, pi_ki_down_follow_lr uses the lr schedule over its peak."""
    t = constrained.pi_control(0.02, beta_init=1.0, ki=0.02, kp=0.0, alpha=0.0, sense="density",
                               ki_down_scale=lambda count: 1.0 - count / 10)
    s = t.init(None)
    _, s = t.update(None, s, constraint=0.01)  # count 0: scale 1; density under its target: beta falls
    _, s = t.update(None, s, constraint=0.01)  # count 1: scale 0.9
    np.testing.assert_allclose(float(s.integral), -0.02 * 0.5 * (1 + 0.9), atol=1e-6)
    _, s = t.update(None, s, constraint=0.03)  # over its target: grows at the full ki
    np.testing.assert_allclose(float(s.integral), -0.02 * 0.5 * 1.9 + 0.02 * 0.5, atol=1e-6)

    from sparsejax.config import load_config
    from sparsejax.train.step import make_multiplier

    over = ["constraint.method=pi", "constraint.sense=density", "constraint.density_target=0.02",
            "constraint.pi_kp=0", "constraint.alpha=0", "constraint.beta_init=1", "train.steps=10", "train.warmup=0",
            "train.schedule=linear", "train.lr_final=0.0"]
    runs = {}
    for follow in ("false", "true"):
        m = make_multiplier(load_config("toy_addition_posttrain", over + [
            f"constraint.pi_ki_down_follow_lr={follow}"]), 0.02)
        s = m.init(None)
        for _ in range(10):
            _, s = m.update(None, s, constraint=0.01)
        runs[follow] = float(s.integral)
    ki = load_config("toy_addition_posttrain", over).constraint.pi_ki
    np.testing.assert_allclose(runs["false"], -10 * ki * 0.5, rtol=1e-5)
    np.testing.assert_allclose(runs["true"], -ki * 0.5 * sum(1 - k / 10 for k in range(10)), rtol=1e-5)


def test_pi_regain_climbs_back_at_the_full_gain_and_new_ground_follows_the_lr():
    """regain (by hand: ki=0.1, kp=0, alpha=0, density target 0.02, error (c - 0.02) / 0.02 clipped to 1, the rise
    scaled by 0.1): three updates over target rise 0.01 each (new ground, scaled); three under target fall 0.1 each
    (full ki); back over target the integral climbs 0.1 a step to its peak 0.03 (not past it in that step), then
    0.01 a step again. Without regain the climb back is 0.01 a step throughout. From a run config: pi_regain needs
    pi_ki_follow_lr."""
    seq = [0.04] * 3 + [0.0] * 3 + [0.04] * 5
    want = {True: [0.01, 0.02, 0.03, -0.07, -0.17, -0.27, -0.17, -0.07, 0.03, 0.03, 0.04],
            False: [0.01, 0.02, 0.03, -0.07, -0.17, -0.27, -0.26, -0.25, -0.24, -0.23, -0.22]}
    for regain in (True, False):
        t = constrained.pi_control(0.02, beta_init=1.0, ki=0.1, kp=0.0, alpha=0.0, sense="density",
                                   ki_up_scale=lambda count: 0.1, regain=regain)
        s, got = t.init(None), []
        for c in seq:
            _, s = t.update(None, s, constraint=c)
            got.append(float(s.integral))
        np.testing.assert_allclose(got, want[regain], atol=1e-6)
        np.testing.assert_allclose(float(s.peak), max(want[regain]), atol=1e-6)

    from sparsejax.config import load_config

    with pytest.raises(ValueError, match="pi_regain=true needs constraint.pi_ki_follow_lr=true"):
        load_config("toy_addition_posttrain", ["constraint.pi_regain=true", "constraint.pi_ki_follow_lr=false"])
    assert load_config("toy_addition_posttrain", ["constraint.pi_regain=true"]).constraint.pi_regain is True


def test_pi_clip_first_averages_clipped_errors():
    """clip_first (by hand: CE target tau 0.01, scale 0.005 (the slack), alpha 0.5, kp 0, ki 0.1): values are clipped
    to [0.005, 0.015] before the EMA. 0.005, then one batch at 0.5 (100x tau), then 0.005: the EMA is 0.005, 0.010,
    0.0075 and the errors +1, 0, +0.5; without it the EMA is 0.005, 0.2525, 0.12875 and the errors +1, -1, -1."""
    seq = [0.005, 0.5, 0.005]
    want = {True: ([0.005, 0.01, 0.0075], [0.1, 0.1, 0.15]), False: ([0.005, 0.2525, 0.12875], [0.1, 0.0, -0.1])}
    for first in (True, False):
        t = constrained.pi_control(0.01, beta_init=1.0, ki=0.1, kp=0.0, alpha=0.5, scale=0.005, clip_first=first)
        s, emas, integrals = t.init(None), [], []
        for c in seq:
            _, s = t.update(None, s, constraint=c)
            emas.append(float(s.ema))
            integrals.append(float(s.integral))
        np.testing.assert_allclose(emas, want[first][0], rtol=1e-5)
        np.testing.assert_allclose(integrals, want[first][1], atol=1e-6)


def test_pi_hold_lets_beta_fall_but_never_rise_again():
    """hold_from=2 (by hand, kp=0, alpha=0, ki=0.1, density target 0.02, error (c - 0.02) / 0.02 clipped to 1):
    the integral grows on updates 0 and 1, then only falls: over target it stays, under target it falls, and over
    target again it does not come back up; with kp > 0 beta never exceeds its previous value once held. From a run
    config, pi_hold_from is a share of train.steps x grad_accum."""
    t = constrained.pi_control(0.02, beta_init=1.0, ki=0.1, kp=0.0, alpha=0.0, sense="density", hold_from=2)
    s = t.init(None)
    integrals = []
    for c in (0.04, 0.04, 0.04, 0.01, 0.04, 0.04):
        _, s = t.update(None, s, constraint=c)
        integrals.append(float(s.integral))
    np.testing.assert_allclose(integrals, [0.1, 0.2, 0.2, 0.15, 0.15, 0.15], atol=1e-6)
    np.testing.assert_allclose(float(s.beta), np.exp(0.15), rtol=1e-6)

    t = constrained.pi_control(0.02, beta_init=1.0, ki=0.1, kp=2.0, alpha=0.0, sense="density", hold_from=3)
    s, betas = t.init(None), []
    for c in (0.03, 0.03, 0.03, 0.01, 0.04, 0.021, 0.04, 0.03):
        _, s = t.update(None, s, constraint=c)
        betas.append(float(s.beta))
    assert betas[1] > betas[0] and betas[2] > betas[1]  # before the hold beta grows
    assert all(b <= a + 1e-7 for a, b in zip(betas[2:], betas[3:]))  # after it, never up
    assert betas[3] < betas[2]  # and still falls at once when told to
    with pytest.raises(ValueError, match="hold_from"):
        constrained.pi_control(0.02, hold_from=-1)

    from sparsejax.config import load_config
    from sparsejax.train.step import make_multiplier

    over = ["constraint.method=pi", "constraint.sense=density", "constraint.density_target=0.02",
            "constraint.pi_kp=0", "constraint.alpha=0", "constraint.beta_init=1", "constraint.pi_ki=0.1",
            "constraint.pi_ki_follow_lr=false", "train.steps=10", "train.grad_accum=2"]
    m = make_multiplier(load_config("toy_addition_posttrain", over + ["constraint.pi_hold_from=0.3"]), 0.02)
    s = m.init(None)
    for _ in range(20):  # 20 updates (10 steps x 2 micro-batches): held from update 6 on
        _, s = m.update(None, s, constraint=0.04)
    np.testing.assert_allclose(float(s.integral), 6 * 0.1, rtol=1e-5)
    with pytest.raises(ValueError, match="pi_hold_from"):
        load_config("toy_addition_posttrain", ["constraint.pi_hold_from=1.5"])


def test_guarded_curriculum_moves_its_target_only_while_the_guard_holds():
    """Annealed from 0.4 to 0.025 over 4 schedule steps (targets 0.4 * 0.0625 ** (p / 4)); the guard's CE (alpha 0:
    no EMA) under guard_tau moves the schedule on, over it holds it, never past anneal_steps."""
    t = constrained.pi_control(0.025, beta_init=1.0, ki=0.1, kp=0.0, alpha=0.0, sense="density", target_start=0.4,
                               anneal_steps=4, guard_tau=1.0)
    s = t.init(None)
    sched = lambda p: 0.4 * 0.0625 ** (min(p, 4) / 4)
    guards = [0.5, 0.5, 0.5, 2.0, 2.0, 0.5, 0.5, 0.5, 2.0, 0.5]
    # progress: 0 at the first update, then +1 while the guard holds, held while it does not, <= 4
    want_p = [0, 1, 2, 2, 2, 3, 4, 4, 4, 4]
    for g, p in zip(guards, want_p):
        _, s = t.update(None, s, constraint=0.1, guard=g)
        assert int(s.progress) == p
        np.testing.assert_allclose(float(s.tau), sched(p), rtol=1e-6)
    with pytest.raises(ValueError, match="pass update"):
        t.update(None, t.init(None), constraint=0.1)
    with pytest.raises(ValueError, match="needs sense='density' and an annealed target"):
        constrained.pi_control(0.02, sense="density", guard_tau=1.0)


def test_guard_settles_only_when_the_schedule_is_done():
    """ki_down waits for the guarded schedule's end, not for the update count (by hand: below target at ki until
    progress reaches anneal_steps)."""
    t = constrained.pi_control(0.02, beta_init=1.0, ki=0.02, kp=0.0, alpha=0.0, sense="density", ki_down=0.2,
                               target_start=0.02, anneal_steps=3, guard_tau=1.0)
    s = t.init(None)
    for g in (2.0, 2.0, 2.0, 2.0):  # guard violated (its error -1 wins): progress stays 0, the integral falls at ki
        _, s = t.update(None, s, constraint=0.01, guard=g)
    np.testing.assert_allclose(float(s.integral), -4 * 0.02 * 1.0, atol=1e-6)
    for g in (0.5, 0.5, 0.5):       # progress 1, 2, 3 (the density's -0.5 wins); the last one is settled
        _, s = t.update(None, s, constraint=0.01, guard=g)
    np.testing.assert_allclose(float(s.integral), -0.08 - 2 * 0.02 * 0.5 - 0.2 * 0.5, atol=1e-6)


def test_guard_lowers_beta_while_the_ce_is_over():
    """The error is the smaller of the density's and the guard's (by hand, relative, kp 0, alpha 0): density 0.5
    over a 0.02 target says +1 (clipped); a guard CE of 0.5 under guard_tau 1.0 says +0.5, of 1.5 says -0.5."""
    t = constrained.pi_control(0.02, beta_init=1.0, ki=0.1, kp=0.0, alpha=0.0, sense="density", target_start=0.02,
                               anneal_steps=3, guard_tau=1.0)
    s = t.init(None)
    _, s = t.update(None, s, constraint=0.5, guard=0.5)
    np.testing.assert_allclose(float(s.integral), 0.1 * 0.5, atol=1e-6)
    _, s = t.update(None, s, constraint=0.5, guard=1.5)
    np.testing.assert_allclose(float(s.integral), 0.1 * 0.5 - 0.1 * 0.5, atol=1e-6)
    _, s = t.update(None, s, constraint=0.01, guard=0.5)  # density under target: -0.5 wins
    np.testing.assert_allclose(float(s.integral), -0.1 * 0.5, atol=1e-6)


def test_guard_and_measure_config_errors():
    from sparsejax.config import load_config

    with pytest.raises(ValueError, match="guard=true .* needs constraint.method=pi, constraint.sense=density"):
        load_config("toy_addition_posttrain", ["constraint.guard=true"])
    with pytest.raises(ValueError, match="constraint.measure"):
        load_config("toy_addition_posttrain", ["constraint.measure=exact"])
    with pytest.raises(ValueError, match="constraint.measure_every"):
        load_config("toy_addition_posttrain", ["constraint.measure_every=0"])
