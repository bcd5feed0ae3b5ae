"""The default training loss is Trace_ELBO's, with parts that add up."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

import pyro_lvae as lv
from pyro_lvae.elbo import elbo_terms


@pytest.mark.parametrize("kind", ["fixed", "learned-scalar", "learned-vector"])
@pytest.mark.parametrize("beta", [1.0, 0.3, 0.0])
def test_elbo_terms_match_trace_elbo_loss_and_gradients(kind, beta):
    obs = {"fixed": lv.FixedScale(0.4), "learned-scalar": lv.LearnedScalarScale(),
           "learned-vector": lv.LearnedVectorScale()}[kind]
    vae = lv.mlp_vae(3, 2, obs, hidden=8, blocks=1)
    x = torch.randn(7, 3)
    pyro.set_rng_seed(11)
    terms = elbo_terms(vae.model, vae.guide, x, beta=beta)
    terms.loss.backward()
    ours = [p.grad.clone() for p in vae.parameters()]
    vae.zero_grad()
    pyro.set_rng_seed(11)
    with lv.scale_latents(beta):
        ref = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    ref.backward()
    loss, ref = terms.loss.detach(), ref.detach()
    assert float(loss) == pytest.approx(float(ref), rel=1e-6)
    assert float(loss) == pytest.approx(float((terms.reconstruction + beta * terms.kl).detach()))
    for a, p in zip(ours, vae.parameters(), strict=True):
        assert torch.allclose(a, p.grad, rtol=1e-5, atol=1e-6)
