"""The default training loss is Trace_ELBO's, with parts that add up."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

import pyro_lvae as lv
from pyro_lvae.objective import elbo_terms

OBSERVATIONS = {
    "fixed": lambda d: lv.FixedScale(0.4),
    "learned-scalar": lambda d: lv.LearnedScalarScale(),
    "learned-channel": lambda d: lv.LearnedChannelScale(d),
    "learned-vector": lambda d: lv.LearnedVectorScale(),
    "scheduled": lambda d: lv.ScheduledScale([0.9, 0.5]),
    "bernoulli": lambda d: lv.BernoulliObservation(),
    "continuous-bernoulli": lambda d: lv.ContinuousBernoulliObservation(),
}


def _data(kind, shape):
    x = torch.rand((7,) + shape, generator=torch.Generator().manual_seed(2))
    return (x > 0.5).float() if kind == "bernoulli" else x


@pytest.mark.parametrize("path", ["traced", "direct"])
@pytest.mark.parametrize("image", [False, True], ids=["mlp", "conv"])
@pytest.mark.parametrize("kind", list(OBSERVATIONS))
@pytest.mark.parametrize("beta", [1.0, 0.3, 0.0])
def test_elbo_terms_have_trace_elbo_loss_and_gradients(kind, image, beta, path):
    """Both ways of computing the terms equal Trace_ELBO's loss under scale_latents(beta), and
    its gradients, with parts that add up."""
    from pyro_lvae.objective import direct_elbo_terms, supports_direct

    if image:
        shape = (2, 8, 8)
        vae = lv.conv_vae(shape, 3, OBSERVATIONS[kind](2), width=4, convs=2, blocks=1)
    else:
        shape = (3,)
        vae = lv.mlp_vae(3, 2, OBSERVATIONS[kind](3), hidden=8, blocks=1)
    assert supports_direct(vae)
    x = _data(kind, shape)
    pyro.set_rng_seed(21)
    if path == "direct":
        terms = direct_elbo_terms(vae, x, beta=beta)
    else:
        terms = elbo_terms(vae.model, vae.guide, x, beta=beta)
    assert float(terms.loss.detach()) == pytest.approx(
        float((terms.reconstruction + beta * terms.kl).detach()), rel=1e-6, abs=1e-5)
    terms.loss.backward()
    ours = [p.grad.clone() for p in vae.parameters()]
    vae.zero_grad()
    pyro.set_rng_seed(21)
    with lv.scale_latents(beta):
        ref = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    ref.backward()
    assert float(terms.loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-6, abs=1e-5)
    for a, p in zip(ours, vae.parameters(), strict=True):
        assert torch.allclose(a, p.grad, rtol=1e-5, atol=1e-6)


def test_fit_default_path_reproduces_a_pyro_traced_run():
    """The same seed through fit's direct path and through Pyro's trace/replay path (a subclass
    of Model, which fit does not compute directly) gives the same losses."""
    from pyro_lvae.vae import Model

    class TracedModel(Model):
        pass

    histories = []
    for traced in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(4)
        vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1)
        if traced:
            vae.model.__class__ = TracedModel
        histories.append(lv.fit(vae, lv.datasets.manifold2d, steps=30, seed=4))
    assert histories[0]["loss"] == pytest.approx(histories[1]["loss"], rel=1e-5)
