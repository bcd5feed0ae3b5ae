"""Untrusted files and unbounded sizes: a model file is checked before anything is built from
it, and every size argument before anything is allocated.

File cases assert a ``CheckpointError`` that names the file and the field, tensor or object at
fault; argument cases a ``ConfigError`` that names the argument, its value and the bound;
command-line cases exit status 2 with one line on stderr and no traceback.
"""

import hashlib
import json
import pickle
import time

import pytest
import torch

import pyro_lvae as lv
from pyro_lvae import limits
from pyro_lvae.cli import main

GiB = 2**30


def tiny(obs=None, prior=None):
    return lv.mlp_vae(2, 2, obs or lv.LearnedScalarScale(init_scale=1.0), hidden=8, blocks=1,
                      prior=prior)


def tiny_conv():
    return lv.conv_vae((1, 8, 8), 2, lv.LearnedVectorScale(init_scale=1.0), width=4, convs=2,
                       blocks=1)


def _save(path, blob):
    torch.save(blob, path)
    return path


def _edited(vae, part, **fields):
    """``vae``'s file dictionary with fields of its configuration's ``part`` replaced (``part``
    None: ``fields`` replace top-level keys of the configuration)."""
    blob = vae.to_file_dict()
    config = json.loads(blob["config"])
    if part is None:
        config.update(fields)
    else:
        config[part] = {**config[part], **fields}
    return {**blob, "config": json.dumps(config)}


def _config_text(vae, text):
    return {**vae.to_file_dict(), "config": text}


class _Exploit:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.fixture
def small_machine(monkeypatch):
    """A machine of 16 GiB, whatever this one has."""
    monkeypatch.setattr(limits, "machine_memory", lambda: 16 * GiB)


# ---- sizes read from a file --------------------------------------------------------------------

SIZE_CASES = {
    # the case: 4 TB of weights before anything was checked
    "hidden of a million": (lambda: _edited(tiny(), "args", hidden=10**6), "args.hidden=1000000"),
    "a billion blocks": (lambda: _edited(tiny(), "args", blocks=10**9), "args.blocks=1000000000"),
    "more blocks than tensors": (lambda: _edited(tiny(), "args", blocks=40),
                                 "args.blocks=40, more than the 26 tensors"),
    "latent size of a million": (lambda: _edited(tiny(), "args", latent_dim=10**6),
                                 "args.latent_dim=1000000"),
    "mixture of a billion components": (
        lambda: _edited(tiny(), None, prior={"kind": "mixture", "components": 10**9}),
        "prior.components=1000000000"),
    "flow of fifty layers": (
        lambda: _edited(tiny(), None, prior={"kind": "flow", "layers": 50}),
        "prior.layers=50, more than the 26 tensors"),
    "schedule of 10**12 steps": (
        lambda: _edited(tiny(), None, observation={"kind": "scheduled", "length": 10**12}),
        "observation.length=1000000000000"),
    "rank of a million": (
        lambda: _edited(tiny(), None, observation={"kind": "low-rank", "rank": 10**6}),
        "observation.rank=1000000"),
    "a billion sigma channels": (
        lambda: _edited(tiny(), None, observation={"kind": "learned-channel",
                                                   "channels": 10**9}),
        "observation.channels=1000000000"),
    "a table column of a billion classes": (
        lambda: _edited(tiny(), None, observation={"kind": "mixed", "schema": [
            ["categorical", 10**9], ["binary"]]}),
        "observation.schema[0] (classes)=1000000000"),
    "convolutions of a million channels": (lambda: _edited(tiny_conv(), "args", width=10**6),
                                           "args.width=1000000"),
    "a million convolutions": (lambda: _edited(tiny_conv(), "args", convs=10**6),
                               "args.convs=1000000"),
    # each size is below the file's 4391 weights, but together they make 2**27 of them
    "images of 4096 x 4096": (lambda: _edited(tiny_conv(), "args", image_shape=[1, 4096, 4096]),
                              "describes a model larger than the weights it holds"),
}


@pytest.mark.parametrize("case", list(SIZE_CASES))
def test_sizes_in_a_file_are_checked_against_its_weights_before_building(case, tmp_path):
    make, message = SIZE_CASES[case]
    path = _save(tmp_path / "m.pt", make())
    start = time.perf_counter()
    with pytest.raises(lv.CheckpointError) as info:
        lv.load(path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert time.perf_counter() - start < 5  # refused before building anything large


def test_a_size_within_the_weights_but_not_theirs_names_the_tensors(tmp_path):
    path = _save(tmp_path / "m.pt", _edited(tiny(), "args", hidden=16))
    with pytest.raises(lv.CheckpointError, match="shape mismatch in guide.encoder"):
        lv.load(path)


# ---- malformed configurations ------------------------------------------------------------------

CONFIG_CASES = {
    "not JSON": (lambda: _config_text(tiny(), "{builder: mlp_vae"), "not valid JSON"),
    "a JSON list": (lambda: _config_text(tiny(), "[1, 2]"), "a JSON list, not an object"),
    "a number instead of text": (lambda: _config_text(tiny(), 5), "an int, not JSON text"),
    "deeply nested JSON": (lambda: _config_text(tiny(), "[" * 100_000 + "]" * 100_000),
                           "not valid JSON"),
    "no builder": (lambda: _edited(tiny(), None, builder=None), "unknown model builder None"),
    "a list for the builder": (lambda: _edited(tiny(), None, builder=["mlp_vae"]),
                               "unknown model builder ['mlp_vae']"),
    "no args": (lambda: _config_text(tiny(), json.dumps({"builder": "mlp_vae",
                                                         "observation": {"kind": "fixed"}})),
                "'args' is missing"),
    "a list for args": (lambda: _edited(tiny(), None, args=[2, 2]), "'args' is a list"),
    "a list for the observation": (lambda: _edited(tiny(), None, observation=["fixed"]),
                                   "'observation' is a list"),
    "an observation without a kind": (lambda: _edited(tiny(), None, observation={"scale": 1}),
                                      "'observation' has no kind"),
    "an unknown observation kind": (lambda: _edited(tiny(), "observation", kind="nope"),
                                    "unknown observation model 'nope'"),
    "a list for the prior": (lambda: _edited(tiny(), None, prior=["mixture"]),
                             "'prior' is a list"),
    "a negative size": (lambda: _edited(tiny(), "args", hidden=-3),
                        "hidden to be an integer >= 1 but got -3"),
    "a size as text": (lambda: _edited(tiny(), "args", hidden="8"),
                       "hidden to be an integer >= 1 but got '8'"),
    "a fractional size": (lambda: _edited(tiny(), "args", latent_dim=2.5), "latent_dim"),
    "an unknown argument": (lambda: _edited(tiny(), "args", depth=3), "'depth'"),
    "an unknown activation": (lambda: _edited(tiny(), "args", activation="gelu"),
                              "unknown activation 'gelu'"),
    "a prior setting as text": (lambda: _edited(tiny(), None, prior={"kind": "mixture",
                                                                     "components": "x"}),
                                "components"),
    "an image shape as text": (lambda: _edited(tiny_conv(), "args", image_shape="abc"),
                               "image_shape"),
    "an image shape of two axes": (lambda: _edited(tiny_conv(), "args", image_shape=[8, 8]),
                                   "image_shape"),
    "no state_dict": (lambda: {k: v for k, v in tiny().to_file_dict().items()
                               if k != "state_dict"}, "state_dict is missing"),
    "a list for the state_dict": (lambda: {**tiny().to_file_dict(), "state_dict": [1]},
                                  "state_dict is a list"),
    "text for a tensor": (lambda: {**tiny().to_file_dict(), "state_dict": {
        **tiny().state_dict(), "model.decoder.0.inp.weight": "w"}},
        "entry 'model.decoder.0.inp.weight' is a str"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_a_malformed_configuration_is_one_checkpoint_error(case, tmp_path):
    make, message = CONFIG_CASES[case]
    path = _save(tmp_path / "m.pt", make())
    with pytest.raises(lv.CheckpointError) as info:
        lv.load(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_an_expanded_tensor_is_refused_before_it_is_read(tmp_path):
    """A tensor of 10**12 elements over a 4-byte storage (stride 0) is refused as such, never
    scanned or copied."""
    blob = tiny().to_file_dict()
    blob["state_dict"]["model.decoder.0.inp.weight"] = torch.zeros(1).expand(10**6, 10**6)
    path = _save(tmp_path / "m.pt", blob)
    with pytest.raises(lv.CheckpointError, match=r"model.decoder.0.inp.weight .* repeats"):
        lv.load(path)


# ---- unsafe pickles ----------------------------------------------------------------------------

def _raw_pickle(path):
    path.write_bytes(pickle.dumps({"format": "pyro-lvae-model", "x": _Exploit()}))
    return path


def _legacy_torch(path):
    torch.save({"x": _Exploit()}, path, _use_new_zipfile_serialization=False)
    return path


def _zip_torch(path):
    torch.save({"format": "pyro-lvae-model", "x": _Exploit()}, path)
    return path


@pytest.mark.parametrize("make", [_raw_pickle, _legacy_torch, _zip_torch],
                         ids=["plain pickle", "legacy torch file", "torch zip file"])
def test_a_crafted_pickle_is_refused_as_unsafe_not_as_truncated(make, tmp_path, capsys):
    path = make(tmp_path / "evil.pt")
    with pytest.raises(lv.CheckpointError) as info:
        lv.load(path)
    message = str(info.value)
    assert str(path) in message and "print)" in message and "could run" in message
    assert "corrupt" not in message and "truncated" not in message
    assert "code ran" not in capsys.readouterr().out


def test_a_plain_pickle_of_data_is_named_as_such(tmp_path):
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps({"format": "pyro-lvae-model", "config": None}))
    with pytest.raises(lv.CheckpointError, match="plain Python pickle, not a file written by "
                                                 "torch.save"):
        lv.load(path)


# ---- NaN and infinite weights ------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_name(value, tmp_path):
    vae = tiny()
    with torch.no_grad():
        vae.model.decoder[0].out.bias[1] = value
    vae.save(tmp_path / "m.pt")
    with pytest.raises(lv.CheckpointError, match=r"weight model.decoder.0.out.bias holds 1 NaN "
                                                 r"or infinite value\(s\) \(of 2\)"):
        lv.load(tmp_path / "m.pt")
    with pytest.raises(lv.CheckpointError, match="model.decoder.0.out.bias"):
        tiny().load_state(tmp_path / "m.pt")


def test_a_checkpoint_with_nan_weights_is_not_resumed(tmp_path):
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    lv.fit(tiny(), x, steps=4, batch_size=16, seed=0, out=tmp_path)
    blob = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    blob["model"]["state_dict"]["guide.encoder.net.1.out.weight"][0, 0] = float("nan")
    torch.save(blob, tmp_path / "checkpoint.pt")
    digest = hashlib.sha256((tmp_path / "checkpoint.pt").read_bytes()).hexdigest()
    with pytest.raises(lv.CheckpointError, match="guide.encoder.net.1.out.weight holds 1 NaN"):
        lv.fit(tiny(), x, steps=8, batch_size=16, seed=0, out=tmp_path, resume=True)
    assert hashlib.sha256((tmp_path / "checkpoint.pt").read_bytes()).hexdigest() == digest


def test_a_pending_data_start_is_no_nan_weight(tmp_path):
    """A learned sigma that has not taken its start from data saves NaN as its (extra) state:
    a flag, not a weight, so the file loads."""
    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale(), hidden=8, blocks=1, standardize=False)
    vae.save(tmp_path / "m.pt")
    assert not lv.load(tmp_path / "m.pt").initialized


# ---- what every kind of model file still loads ------------------------------------------------

ROUND_TRIPS = {
    "mixture prior": lambda: tiny(prior=lv.MixturePrior(3)),
    "vamp prior": lambda: tiny(prior=lv.VampPrior(3)),
    "flow prior": lambda: tiny(prior=lv.FlowPrior(layers=2, hidden=8)),
    "spline flow prior": lambda: tiny(prior=lv.FlowPrior("spline", layers=1, hidden=10**7)),
    "low-rank": lambda: tiny(lv.LowRankNormal(rank=2, init_scale=0.5)),
    "scheduled": lambda: tiny(lv.ScheduledScale([1.0, 0.5, 0.25])),
    "mixed table": lambda: lv.mlp_vae(3, 2, lv.MixedObservation(
        [["continuous"], ["integer", 1, 0, 5], ["categorical", 3]]), hidden=8, blocks=1,
        standardize=False),
    "convolutional": tiny_conv,
    "no blocks": lambda: lv.mlp_vae(2, 1, lv.FixedScale(0.5), hidden=1, blocks=0),
}


@pytest.mark.parametrize("case", list(ROUND_TRIPS))
def test_every_kind_of_model_file_still_loads(case, tmp_path):
    vae = ROUND_TRIPS[case]()
    vae.save(tmp_path / "m.pt")
    loaded = lv.load(tmp_path / "m.pt")
    assert loaded.config == vae.config
    for key, value in vae.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(loaded.state_dict()[key], value), key


# ---- size arguments ----------------------------------------------------------------------------

ARGUMENT_CASES = {
    "mixture components": (lambda: lv.MixturePrior(10**9), "components=1000000000"),
    "mixture components at the latent size": (
        lambda: lv.MixturePrior(10**7).setup(latent_dim=100), "components=10000000"),
    "vamp components": (lambda: lv.VampPrior(10**10), "components=10000000000"),
    "vamp pseudo-inputs of large images": (
        lambda: lv.VampPrior(1000).setup(2, data_shape=(3, 2048, 2048)), "components=1000"),
    "flow layers": (lambda: lv.FlowPrior(layers=10**8), "layers=100000000"),
    "flow hidden units": (lambda: lv.FlowPrior(hidden=10**5), "hidden=100000"),
    "flow spline bins": (lambda: lv.FlowPrior("spline", bins=10**9).setup(4), "bins=1000000000"),
    "flow spline-coupling bins": (lambda: lv.FlowPrior("spline-coupling", hidden=8, bins=10**9),
                                  "bins=1000000000"),
    "hidden units of an MLP VAE": (lambda: lv.mlp_vae(2, 2, lv.FixedScale(1.0), hidden=10**6),
                                   "hidden=1000000"),
    "blocks of an MLP VAE": (lambda: lv.mlp_vae(2, 2, lv.FixedScale(1.0), hidden=200,
                                                blocks=10**6), "blocks=1000000"),
    "width of a convolutional VAE": (
        lambda: lv.conv_vae((1, 28, 28), 2, lv.FixedScale(1.0), width=10**5), "width=100000"),
}


@pytest.mark.parametrize("case", list(ARGUMENT_CASES))
def test_size_arguments_beyond_the_machine_are_refused_before_allocating(case, small_machine):
    make, message = ARGUMENT_CASES[case]
    start = time.perf_counter()
    with pytest.raises(lv.ConfigError) as info:
        make()
    text = str(info.value)
    assert message in text and "more than this machine's 16 GiB of memory" in text
    assert time.perf_counter() - start < 5


def test_sizes_that_fit_are_accepted(small_machine):
    assert lv.MixturePrior(10**6).setup(8).locs.shape == (10**6, 8)
    assert lv.FlowPrior(layers=2, hidden=64).setup(3).latent_dim == 3


def test_a_flow_narrower_than_the_latent_code_is_a_config_error():
    with pytest.raises(lv.ConfigError, match="hidden >= latent_dim.*hidden=2 for latent_dim=4"):
        lv.mlp_vae(4, 4, lv.FixedScale(1.0), hidden=8, blocks=1, prior=lv.FlowPrior(hidden=2))


@pytest.mark.parametrize("data_shape,rank", [((2,), 3), ((1, 2, 2), 5)])
def test_a_low_rank_factor_beyond_the_data_dimension_is_refused(data_shape, rank):
    obs = lv.LowRankNormal(rank=rank, init_scale=0.5)
    with pytest.raises(lv.ConfigError, match=f"rank={rank}.*D={torch.Size(data_shape).numel()}"):
        if len(data_shape) == 1:
            lv.mlp_vae(data_shape[0], 1, obs, hidden=8, blocks=1)
        else:
            lv.conv_vae(data_shape, 1, obs, width=2, convs=1, blocks=0)


def test_a_low_rank_factor_as_large_as_the_data_dimension_is_accepted():
    vae = lv.mlp_vae(2, 1, lv.LowRankNormal(rank=2, init_scale=0.5), hidden=8, blocks=1,
                     standardize=False)
    assert vae.sample(3, mode="sample").shape == (3, 2)


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    pd = pytest.importorskip("pandas")
    folder = tmp_path_factory.mktemp("table") / "run"
    df = pd.DataFrame({"x": [0.5, 1.25, 2.0, 2.5] * 10, "c": list("abab") * 10})
    lv.tabular.TabularModel.fit(df, steps=2, hidden=8, blocks=1, seed=0).save(folder)
    return folder


def test_sampling_more_rows_than_the_machine_holds_is_refused(table_run, small_machine):
    model = lv.tabular.TabularModel.load(table_run)
    with pytest.raises(lv.ConfigError, match="n=1000000000000 needs .* more than this "
                                             "machine's 16 GiB"):
        model.sample(10**12)
    assert len(model.sample(7, seed=0)) == 7


def test_the_machine_memory_falls_back_to_a_fixed_bound(monkeypatch):
    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(limits, "_MEMINFO", "/nonexistent/meminfo")
    monkeypatch.setattr(limits.os, "sysconf", no_sysconf)
    assert limits.machine_memory.__wrapped__() == limits.FALLBACK_MEMORY == 2**40
    monkeypatch.undo()
    assert limits.machine_memory() > 0


# ---- the command line --------------------------------------------------------------------------

def _one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert err.startswith("pyro-lvae: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err and all(w in err for w in words), err


def test_cli_prior_components_beyond_the_machine(tmp_path, capsys, small_machine):
    code = main(["train", "--prior", "mixture", "--prior-components", str(10**9), "--steps", "2",
                 "--hidden", "8", "--blocks", "1", "--quiet", "--out", str(tmp_path / "r")])
    assert code == 2
    _one_line_error(capsys, "components=1000000000", "16 GiB")


def test_cli_tabular_sample_of_more_rows_than_the_machine(table_run, tmp_path, capsys,
                                                          small_machine):
    out = tmp_path / "x.csv"
    assert main(["tabular", "sample", str(table_run), "-n", str(10**12), "-o", str(out)]) == 2
    _one_line_error(capsys, "n=1000000000000", "16 GiB")
    assert not out.exists()


def test_cli_train_resume_of_a_run_whose_checkpoint_has_nan_weights(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--steps", "3", "--hidden", "8", "--blocks", "1", "--quiet", "--out",
                 str(run)]) == 0
    blob = torch.load(run / "checkpoint.pt", weights_only=True)
    state = blob["model"]["state_dict"]
    state[next(k for k in state if k.endswith("out.bias"))][0] = float("inf")
    torch.save(blob, run / "checkpoint.pt")
    digest = hashlib.sha256((run / "checkpoint.pt").read_bytes()).hexdigest()
    assert main(["train", "--resume", str(run), "--steps", "6", "--quiet"]) == 2
    _one_line_error(capsys, "out.bias holds 1 NaN or infinite")
    assert hashlib.sha256((run / "checkpoint.pt").read_bytes()).hexdigest() == digest
