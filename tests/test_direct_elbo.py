"""DirectELBO is Trace_ELBO's objective for pyro-lvae's own model and guide: equal values and
gradients for every registered observation model and prior (read from the registries, so a
new one is covered), usable by plain SVI and torch optimisers, and a refusal by name wherever
it would not be exact."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from test_objective import _GainDecoder
from test_observation_contract import image_vae, make, own_data, vector_vae

import pyro_lvae as lv
from pyro_lvae import priors
from pyro_lvae.direct_elbo import direct_elbo_terms
from pyro_lvae.errors import ConfigError
from pyro_lvae.observations import OBSERVATIONS
from pyro_lvae.priors import PRIORS

#: small settings for priors that would otherwise be large
PRIOR_SETTINGS = {"flow": {"layers": 1, "hidden": 4}, "mixture": {"components": 3},
                  "vamp": {"components": 3}}


def _with_prior(kind, prior, x):
    """A fresh tiny VAE with the observation model ``kind`` and the prior ``prior``, started
    on ``x``."""
    vae = lv.mlp_vae(x.shape[1], 2, make(kind), hidden=8, blocks=1, standardize=False,
                     prior=priors.build(prior, **PRIOR_SETTINGS.get(prior, {})))
    vae.initialize(x)
    return vae


def _loss_and_grads(elbo, vae, x, beta):
    vae.zero_grad()
    pyro.set_rng_seed(3)
    model, guide = lv.annealed(vae.model), lv.annealed(vae.guide)
    loss = elbo.differentiable_loss(model, guide, torch.tensor(beta), x)
    loss.backward()
    return float(loss), {n: p.grad.clone() for n, p in vae.named_parameters()
                         if p.grad is not None}


@pytest.mark.parametrize("prior", sorted(PRIORS))
@pytest.mark.parametrize("kind", sorted(OBSERVATIONS))
def test_direct_elbo_equals_trace_elbo_in_value_and_gradients(kind, prior):
    x = own_data(vector_vae(kind))
    cases = [("vector", _with_prior(kind, prior, x), x)]
    image = image_vae(kind)
    if image is not None and prior == "normal":
        cases.append(("image", image, own_data(image)))
    for label, vae, x in cases:
        assert lv.DirectELBO.why_not(vae.model, vae.guide, x) is None, label
        for beta in (1.0, 0.3):
            got, got_grads = _loss_and_grads(lv.DirectELBO(), vae, x, beta)
            want, want_grads = _loss_and_grads(Trace_ELBO(), vae, x, beta)
            assert got == pytest.approx(want, rel=1e-5, abs=1e-4), (label, beta)
            assert got_grads.keys() == want_grads.keys(), label
            for name, g in want_grads.items():
                torch.testing.assert_close(got_grads[name], g, rtol=1e-4, atol=1e-5,
                                           msg=f"{kind}/{prior}/{label}: {name}")


def test_svi_with_direct_elbo_takes_trace_elbos_steps():
    """Under plain SVI (its parameter capture included) the trajectories are the same."""
    runs = []
    for elbo in (Trace_ELBO(), lv.DirectELBO()):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
        x = lv.datasets.manifold2d(32, torch.Generator().manual_seed(1))
        vae.initialize(x)
        svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), elbo)
        with lv.weight_latents(0.5):
            losses = [svi.step(x) for _ in range(4)]
        runs.append((losses, [p.detach().clone() for p in vae.parameters()]))
    assert runs[1][0] == pytest.approx(runs[0][0], rel=1e-5)
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_elbo_module_and_several_particles_match_trace_elbo():
    vae = lv.mlp_vae(2, 2, lv.LearnedVectorScale(), hidden=8, blocks=1)
    x = lv.datasets.manifold2d(16, torch.Generator().manual_seed(1))
    vae.initialize(x)
    pyro.set_rng_seed(4)
    got = lv.DirectELBO(num_particles=3)(vae.model, vae.guide)(x)
    pyro.set_rng_seed(4)
    want = Trace_ELBO(num_particles=3).differentiable_loss(vae.model, vae.guide, x)
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_beta_zero_masks_the_latent_term_as_weight_latents_does():
    vae = lv.mlp_vae(2, 2, lv.FixedScale(0.3), hidden=8, blocks=1)
    x = lv.datasets.manifold2d(16, torch.Generator().manual_seed(1))
    pyro.set_rng_seed(2)
    terms = direct_elbo_terms(vae, x, beta=0.0)
    with lv.weight_latents(0.0):
        pyro.set_rng_seed(2)
        want = Trace_ELBO().loss(vae.model, vae.guide, x)
    assert float(terms.loss) == pytest.approx(want, rel=1e-6)
    assert float(terms.loss) == pytest.approx(float(terms.reconstruction), rel=1e-6)


class _Noisy(lv.FixedScale):
    """An observation model with a sample site of its own."""

    def forward(self, output, event_dim):
        jitter = pyro.sample("jitter", dist.Normal(0.0, 0.1))
        return super().forward(output + jitter, event_dim)


def _refusals():
    x = lv.datasets.manifold2d(8, torch.Generator().manual_seed(1))
    plain = lv.mlp_vae(2, 2, lv.FixedScale(0.5), hidden=8, blocks=1)
    noisy = lv.mlp_vae(2, 2, _Noisy(0.5), hidden=8, blocks=1)
    gain = lv.VAE(plain.guide.encoder, _GainDecoder(torch.nn.Linear(2, 2)), 2,
                  lv.FixedScale(0.5), data_shape=2)
    return {
        "own program": ((lambda x: None), plain.guide, (x,), {}, "not pyro-lvae's Model"),
        "custom forward": (noisy.model, noisy.guide, (x,), {}, "forward of its own"),
        "pyro module net": (gain.model, gain.guide, (x,), {}, "PyroModule"),
        "generation": (plain.model, plain.guide, (), {"batch_size": 3}, "generating"),
        "one side annealed": (lv.annealed(plain.model), plain.guide, (1.0, x), {},
                              "wrap both"),
    }


@pytest.mark.parametrize("case", list(_refusals()))
def test_direct_elbo_refuses_by_name_where_it_would_not_be_exact(case):
    model, guide, args, kwargs, reason = _refusals()[case]
    assert reason in lv.DirectELBO.why_not(model, guide, *args, **kwargs)
    with pytest.raises(ConfigError, match="DirectELBO cannot compute"):
        lv.DirectELBO().loss(model, guide, *args, **kwargs)


def test_a_foreign_handler_is_refused_and_fit_falls_back_with_a_warning(caplog):
    vae = lv.mlp_vae(2, 2, lv.FixedScale(0.5), hidden=8, blocks=1)
    x = lv.datasets.manifold2d(8, torch.Generator().manual_seed(1))
    with poutine.scale(scale=0.5):
        assert "ScaleMessenger" in lv.DirectELBO.why_not(vae.model, vae.guide, x)
        with pytest.raises(ConfigError, match="ScaleMessenger"):
            lv.DirectELBO().loss(vae.model, vae.guide, x)
        with caplog.at_level("WARNING", logger="pyro_lvae"):
            h = lv.fit(vae, x, steps=2, batch_size=8, seed=0)
    assert h.objective == "pyro Trace_ELBO"
    assert "not DirectELBO" in caplog.text and "ScaleMessenger" in caplog.text
    with pytest.raises(ConfigError, match="ScaleMessenger"), poutine.scale(scale=0.5):
        lv.fit(vae, x, steps=2, batch_size=8, seed=0, elbo=lv.DirectELBO())


def test_fit_trains_on_direct_elbo_by_default():
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
    h = lv.fit(vae, lv.datasets.manifold2d, steps=3, batch_size=16, seed=0)
    assert h.objective == "DirectELBO"


def test_the_pyro_handler_stack_it_reads_is_pyros():
    """DirectELBO reads Pyro's private handler stack (pyro.poutine.runtime._PYRO_STACK) to
    refuse handlers it cannot apply: this pins what it relies on."""
    from pyro.poutine.runtime import _PYRO_STACK
    from pyro.poutine.trace_messenger import TraceMessenger

    assert _PYRO_STACK == []
    with poutine.scale(scale=2.0) as outer, lv.weight_latents(0.5) as inner:
        assert _PYRO_STACK == [outer, inner]
    with poutine.trace(param_only=True) as capture:
        assert isinstance(capture, TraceMessenger) and capture.param_only
    assert _PYRO_STACK == []


def test_direct_elbo_needs_a_valid_particle_count():
    with pytest.raises(ConfigError, match="num_particles"):
        lv.DirectELBO(num_particles=0)
