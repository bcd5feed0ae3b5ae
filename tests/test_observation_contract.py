"""The contract of every registered observation model, read from the registry: registering a new
class puts it under every test here (give it settings in ``REQUIRED`` if it needs some).

For each kind: trace shapes and a finite log-density on vectors and on images, draws of the
right shape inside the model's support, a gradient on every decoder output and every learned
parameter, training through ``SVI``/``Trace_ELBO`` and through :func:`pyro_lvae.fit` (on
:class:`~pyro_lvae.DirectELBO`, checked equal to ``Trace_ELBO`` in tests/test_direct_elbo.py),
``Predictive``, and the round trips through
``config()`` and through ``save``/``lv.load`` with the same log-density.

Data come from the model itself (draws of ``p(x | z)`` at ``z ~ N(0, I)`` under a fixed seed),
so each kind is fed values inside its own support (binary, in [0, 1], on the 8-bit grid, codes,
counts). The count models generate only after measuring data (their library sizes): they are
started on Poisson counts first.
"""

import pyro
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from torch import nn

import pyro_lvae as lv
from pyro_lvae import observations
from pyro_lvae.errors import ConfigError
from pyro_lvae.nets import GaussianEncoder
from pyro_lvae.observations import OBSERVATIONS

D, K, N = 3, 2, 16
IMAGE = (2, 2, 3)

#: settings for the kinds that cannot be built without some
REQUIRED = {
    "fixed": {"scale": 0.5},
    "learned-channel": {"channels": D},
    "scheduled": {"schedule": [1.0, 0.5, 0.25]},
    "mixed": {"schema": [["continuous"], ["binary"], ["categorical", 3]]},
}
KINDS = sorted(OBSERVATIONS)


def make(kind, **extra):
    settings = {**REQUIRED.get(kind, {}), **extra}
    if "init_scale" in observations.settings_of(kind):
        settings.setdefault("init_scale", 0.5)  # a start without data, for the first draws
    if "init_theta" in observations.settings_of(kind):
        settings.setdefault("init_theta", 2.0)
    try:
        return observations.build(kind, **settings)
    except ConfigError as e:
        raise AssertionError(f"{kind}: give its settings in REQUIRED ({e})") from None


def _start_counts(vae, shape):
    """Count models measure the library sizes of data before they generate: Poisson counts."""
    if vae.observation.counts:
        vae.initialize(torch.poisson(torch.full((N,) + shape, 4.0),
                                     generator=torch.Generator().manual_seed(1)))
    return vae


def vector_vae(kind, standardize=False):
    vae = lv.mlp_vae(D, K, make(kind), hidden=8, blocks=1, standardize=standardize)
    return _start_counts(vae, (D,)) if not standardize else vae


def image_vae(kind):
    """A hand-assembled VAE for tiny images; ``None`` for models of vectors only."""
    obs = make(kind, **({"channels": IMAGE[0]} if kind == "learned-channel" else {}))
    try:
        out = obs.output_shape(IMAGE)
    except ConfigError:
        return None
    encoder = GaussianEncoder(nn.Sequential(nn.Flatten(), nn.Linear(IMAGE[0] * 6, 2 * K)), K)
    decoder = nn.Sequential(nn.Linear(K, torch.Size(out).numel()), nn.Unflatten(-1, out))
    return _start_counts(lv.VAE(encoder, decoder, K, obs, data_shape=IMAGE), IMAGE)


def own_data(vae, n=N, seed=5):
    """Draws of the model's own ``p(x | z)``, ``z ~ N(0, I)``: data in its support."""
    torch.manual_seed(seed)
    return vae.sample(n, mode="sample").detach()


def vaes(kind):
    plain = vector_vae(kind)
    standardized = vector_vae(kind, standardize=True)  # mlp_vae's default
    standardized.initialize(own_data(plain))  # measured on data in the model's support
    out = [("vector", plain), ("standardized", standardized)]
    image = image_vae(kind)
    if image is not None:
        out.append(("image", image))
    return out


def test_the_contract_covers_every_registered_kind_and_they_build_from_defaults():
    assert {"fixed", "learned-vector", "mixed", "discretized-logistic", "calibrated",
            "student-t", "low-rank"} <= set(KINDS)
    for kind in KINDS:
        assert type(make(kind)) is OBSERVATIONS[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_finite_log_density_and_draws_in_the_support(kind):
    for label, vae in vaes(kind):
        shape = vae.data_shape
        x = own_data(vae)
        assert x.shape == (N,) + shape and torch.isfinite(x).all(), label
        vae.observation.check_support(x)  # draws lie in the model's support
        guide_trace = pyro.poutine.trace(vae.guide).get_trace(x)
        trace = pyro.poutine.trace(pyro.poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
        fn = trace.nodes["x"]["fn"]
        assert fn.batch_shape == (N,) and fn.event_shape == shape, label
        log_p = fn.log_prob(x)
        assert log_p.shape == (N,) and torch.isfinite(log_p).all(), label
        assert fn.sample().shape == (N,) + shape, label
        assert fn.sample((4,)).shape == (4, N) + shape, label
        assert fn.mean.shape == (N,) + shape and torch.isfinite(fn.mean).all(), label


@pytest.mark.parametrize("kind", KINDS)
def test_every_decoder_output_and_every_parameter_gets_a_gradient(kind):
    for label, vae in vaes(kind):
        x = own_data(vae)
        vae.observation.initialize(x)
        loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
        assert torch.isfinite(loss), label
        loss.backward()
        for name, p in vae.named_parameters():
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), f"{label}: no gradient "\
                f"on {name}"
        if label == "image":  # one bias per decoder output: every output reaches the loss
            bias = vae.model.decoder[0].bias.grad
            assert bool((bias != 0).all()), f"{int((bias == 0).sum())} outputs without gradient"


@pytest.mark.parametrize("kind", KINDS)
def test_svi_trains_every_parameter_and_predictive_draws(kind):
    vae = vector_vae(kind)
    x = own_data(vae)
    before = {n: p.detach().clone() for n, p in vae.named_parameters()}
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    for n, p in vae.named_parameters():
        assert not torch.equal(before[n], p.detach()), f"parameter did not change: {n}"
    post = Predictive(vae.model, guide=vae.guide, num_samples=3)(x)
    assert post["z"].shape == (3, N, K)
    prior = Predictive(vae.model, num_samples=2, return_sites=["x"])(None, batch_size=5)
    assert prior["x"].shape == (2, 5, D)
    vae.observation.check_support(prior["x"].reshape(-1, D))


@pytest.mark.parametrize("kind", KINDS)
def test_fit_trains_every_model_on_direct_elbo(kind):
    """fit's default loss is DirectELBO for every registered model (whose equality with
    Trace_ELBO tests/test_direct_elbo.py checks)."""
    vae = vector_vae(kind)
    x = own_data(vae, n=32)
    vae.observation.initialize(x)
    history = lv.fit(vae, x, steps=3, batch_size=16, seed=0)
    assert history.objective == "DirectELBO"
    assert all(torch.isfinite(torch.as_tensor(history["loss"])))


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trip(kind):
    obs = make(kind)
    again = observations.observation_from_config(obs.config())
    assert type(again) is type(obs) and again.config() == obs.config()


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_give_the_same_log_density(kind, tmp_path):
    vae = vector_vae(kind)
    x = own_data(vae)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(3):  # moved away from the start, learned parameters included
        svi.step(x)
    vae.save(tmp_path / "m.pt")
    loaded = lv.load(tmp_path / "m.pt")
    assert loaded.observation.config() == vae.observation.config()
    z = torch.randn(N, K)
    with torch.no_grad():
        want = vae.likelihood(z).log_prob(x)
        got = loaded.likelihood(z).log_prob(x)
    assert torch.isfinite(want).all()
    torch.testing.assert_close(got, want)
